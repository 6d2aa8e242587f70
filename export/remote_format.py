"""Conversion of the original remote-code Florence-2 checkpoints (microsoft/Florence-2-*) to the native layout.

The remote-code format carries its own Python classes (``auto_map``), a ``davit`` vision config, a
``florence2_language`` (BART) text config, weights named after the original DaViT modules, and a plain BART
tokenizer that its processor extends at load time. The native layout is transformers'
``Florence2ForConditionalGeneration``.
The renames mirror transformers' ``convert_florence2_original_pytorch_to_hf.py``; ``<image>`` is added to the
tokenizer as the image token, and the embeddings grow (to a multiple of 64) only when it does not fit. The
generation config is the one the original ``generate()`` runs with (see ``export.generation_config``), not the
hub's ``generation_config.json``.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from export.errors import ExportError, NotAFlorence2Checkpoint
from export.generation_config import original_generation_config

log = logging.getLogger("export")

_BLOCK = "vision_tower.blocks.{s}.{b}."  # remote prefix of a DaViT block; the native one adds "model."
_PROJECTOR = "model.multi_modal_projector."

# (remote name, native name) templates. {s} stage, {b} block, {n} conv or fc index: digits; {p} weight or bias;
# {any} the rest of a name. One table serves both directions.
KEY_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("vision_tower.convs.{s}.proj.{p}", "model.vision_tower.convs.{s}.conv.{p}"),
    ("vision_tower.convs.{s}.norm.{p}", "model.vision_tower.convs.{s}.norm.{p}"),
    (_BLOCK + "spatial_block.conv{n}.fn.dw.{p}", "model." + _BLOCK + "spatial_block.conv{n}.{p}"),
    (_BLOCK + "channel_block.conv{n}.fn.dw.{p}", "model." + _BLOCK + "channel_block.conv{n}.{p}"),
    (_BLOCK + "spatial_block.window_attn.norm.{p}", "model." + _BLOCK + "spatial_block.norm1.{p}"),
    (_BLOCK + "spatial_block.window_attn.fn.qkv.{p}", "model." + _BLOCK + "spatial_block.window_attn.qkv.{p}"),
    (_BLOCK + "spatial_block.window_attn.fn.proj.{p}", "model." + _BLOCK + "spatial_block.window_attn.proj.{p}"),
    (_BLOCK + "channel_block.channel_attn.norm.{p}", "model." + _BLOCK + "channel_block.norm1.{p}"),
    (_BLOCK + "channel_block.channel_attn.fn.qkv.{p}", "model." + _BLOCK + "channel_block.channel_attn.qkv.{p}"),
    (_BLOCK + "channel_block.channel_attn.fn.proj.{p}", "model." + _BLOCK + "channel_block.channel_attn.proj.{p}"),
    (_BLOCK + "spatial_block.ffn.norm.{p}", "model." + _BLOCK + "spatial_block.norm2.{p}"),
    (_BLOCK + "channel_block.ffn.norm.{p}", "model." + _BLOCK + "channel_block.norm2.{p}"),
    (_BLOCK + "spatial_block.ffn.fn.net.fc{n}.{p}", "model." + _BLOCK + "spatial_block.ffn.fc{n}.{p}"),
    (_BLOCK + "channel_block.ffn.fn.net.fc{n}.{p}", "model." + _BLOCK + "channel_block.ffn.fc{n}.{p}"),
    ("image_projection", _PROJECTOR + "image_projection.weight"),  # transposed, see TRANSPOSED
    ("image_proj_norm.{p}", _PROJECTOR + "image_proj_norm.{p}"),
    ("image_pos_embed.row_embeddings.weight", _PROJECTOR + "image_position_embed.row_embeddings.weight"),
    ("image_pos_embed.column_embeddings.weight", _PROJECTOR + "image_position_embed.column_embeddings.weight"),
    ("visual_temporal_embed.pos_idx_to_embed", _PROJECTOR + "visual_temporal_embed.pos_idx_to_embed"),
    ("language_model.lm_head.weight", "lm_head.weight"),
    ("language_model.model.{any}", "model.language_model.{any}"),
)
# The remote model keeps the projection as a bare [vision_dim, projection_dim] parameter used as x @ W.
TRANSPOSED = frozenset({"image_projection"})
# Remote keys with no native counterpart; they must hold zeros (BART's logits bias, unused by Florence-2).
DROPPED_ZERO = frozenset({"language_model.final_logits_bias"})

_PLACEHOLDERS = {"s": r"\d+", "b": r"\d+", "n": r"\d+", "p": r"weight|bias", "any": r".+"}


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    for name, rx in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{rx})")
    return re.compile(f"^{pattern}$")


_TO_NATIVE = [(_compile(remote), native) for remote, native in KEY_TEMPLATES]
_TO_REMOTE = [(_compile(native), remote) for remote, native in KEY_TEMPLATES]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict())
    return None


def native_key(remote: str) -> str | None:
    """The native name of a remote-code weight, or None when the map has no rule for it."""
    return _rename(remote, _TO_NATIVE)


def remote_key(native: str) -> str | None:
    """The remote-code name of a native weight (the inverse map)."""
    return _rename(native, _TO_REMOTE)


def convert_state_dict(remote: dict[str, Any]) -> dict[str, Any]:
    """Rename (and transpose where needed) every remote weight; unknown names are an error, not a silent drop."""
    native: dict[str, Any] = {}
    unknown = []
    for key, tensor in remote.items():
        if key in DROPPED_ZERO:
            if tensor.abs().max().item() != 0:
                raise ExportError(
                    f"{key} is not zero; the native layout has no place for it, conversion would change outputs"
                )
            continue
        new = native_key(key)
        if new is None:
            unknown.append(key)
            continue
        native[new] = tensor.t().contiguous() if key in TRANSPOSED else tensor
    if unknown:
        raise NotAFlorence2Checkpoint(f"unexpected weights for a remote-code Florence-2 checkpoint: {unknown[:5]}")
    return native


def convert_config(remote: dict[str, Any], image_token_id: int, vocab_size: int) -> dict[str, Any]:
    """The native ``config.json`` content for a remote-code ``config.json``."""
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    vision = dict(remote["vision_config"])
    vision_config = Florence2VisionConfig(
        embed_dim=vision["dim_embed"],
        num_heads=vision["num_heads"],
        num_groups=vision["num_groups"],
        depths=vision["depths"],
        patch_size=vision["patch_size"],
        patch_stride=vision["patch_stride"],
        patch_padding=vision["patch_padding"],
        patch_prenorm=vision["patch_prenorm"],
        window_size=vision["window_size"],
        drop_path_rate=vision.get("drop_path_rate", 0.1),
        projection_dim=vision.get("projection_dim", remote.get("projection_dim", 1024)),
        max_temporal_embeddings=(vision.get("visual_temporal_embedding") or {}).get("max_temporal_embeddings", 100),
        max_position_embeddings=(vision.get("image_pos_embed") or {}).get("max_pos_embeddings", 50),
    )
    text = {k: v for k, v in remote["text_config"].items() if k not in ("model_type", "architectures", "auto_map")}
    text["vocab_size"] = vocab_size
    text_config = BartConfig(**text)
    config = Florence2Config(
        text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), image_token_id=image_token_id
    )
    data = config.to_dict()
    data["architectures"] = ["Florence2ForConditionalGeneration"]
    if remote.get("random_weights"):
        data["random_weights"] = True
    return data


def _load_remote_weights(path: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    shards = sorted(path.glob("model*.safetensors"))
    if shards:
        loaded: dict[str, Any] = {}
        for shard in shards:
            loaded.update(load_file(str(shard)))
        return loaded
    bins = sorted(path.glob("pytorch_model*.bin"))
    if not bins:
        raise NotAFlorence2Checkpoint(f"{path} has no model.safetensors or pytorch_model.bin weights")
    loaded = {}
    for shard in bins:
        loaded.update(torch.load(str(shard), map_location="cpu", weights_only=True))
    return loaded


def convert_tokenizer(path: Path, out: Path) -> Any:
    """BART tokenizer + Florence-2's added tokens (as the remote processor adds them) + ``<image>`` as image token."""
    from transformers import BartTokenizerFast

    from export.tiny import FLORENCE_TASK_TOKENS, IMAGE_TOKEN

    tokenizer = BartTokenizerFast.from_pretrained(path)
    present = set(tokenizer.get_vocab())
    missing = [t for t in (*FLORENCE_TASK_TOKENS, IMAGE_TOKEN) if t not in present]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [*tokenizer.additional_special_tokens, *missing]},
            replace_additional_special_tokens=True,
        )
    # Registering the image token must not move ids: save with the tokens added, reload with extra_special_tokens.
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        tokenizer = BartTokenizerFast.from_pretrained(tmp, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.save_pretrained(out)
    return tokenizer


def convert_image_processor(path: Path) -> Any:
    from transformers import CLIPImageProcessor

    config_path = path / "preprocessor_config.json"
    if not config_path.is_file():
        raise NotAFlorence2Checkpoint(f"{path} has no preprocessor_config.json")
    data = {k: v for k, v in json.loads(config_path.read_text()).items() if k not in ("auto_map", "processor_class")}
    size = data.get("size") or {"height": 768, "width": 768}
    data.setdefault("image_seq_length", (size["height"] // 32) * (size["width"] // 32) + 1)
    data.pop("image_processor_type", None)
    return CLIPImageProcessor(**data)


def convert_checkpoint(path: Path, out: Path) -> Path:
    """Write the native-layout checkpoint of the remote-code checkpoint ``path`` into ``out``; returns ``out``."""
    import torch
    from transformers import Florence2Config, Florence2ForConditionalGeneration, Florence2Processor

    from export.tiny import POST_PROCESSOR_CONFIG

    remote_config = json.loads((path / "config.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = convert_tokenizer(path, out)
    remote_vocab = remote_config["text_config"].get("vocab_size", remote_config.get("vocab_size"))
    # Grow the vocabulary only when <image> does not fit, padded to a multiple of 64 as the native checkpoints are.
    vocab_size = remote_vocab if len(tokenizer) <= remote_vocab else -(-len(tokenizer) // 64) * 64
    native_config = convert_config(remote_config, tokenizer.image_token_id, vocab_size)

    state = convert_state_dict(_load_remote_weights(path))
    embed_key = "model.language_model.shared.weight"
    if embed_key not in state:
        state[embed_key] = state.get("lm_head.weight")
    if vocab_size > remote_vocab:
        # New rows get the mean embedding: deterministic, and (tied with lm_head) their logit is the mean of all
        # logits, so greedy and beam search never pick them over an original token.
        for key in [k for k in state if k.endswith("embed_tokens.weight") or k in (embed_key, "lm_head.weight")]:
            table = state[key]
            extra = table.mean(0, keepdim=True).expand(vocab_size - table.shape[0], -1)
            state[key] = torch.cat([table, extra], 0)

    config = Florence2Config(**{k: v for k, v in native_config.items() if k != "architectures"})
    with torch.device("meta"):
        model = Florence2ForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = {
        "lm_head.weight",
        "model.language_model.encoder.embed_tokens.weight",
        "model.language_model.decoder.embed_tokens.weight",
    }
    computed = {"model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed"}  # a fixed sinusoid table
    if set(missing) - tied - computed or unexpected:
        raise NotAFlorence2Checkpoint(
            f"converted weights do not fit the native model: missing {sorted(set(missing) - tied - computed)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    if computed & set(missing):
        module = model.model.multi_modal_projector.visual_temporal_embed
        fresh = type(module)(config)
        module.pos_idx_to_embed = fresh.pos_idx_to_embed
    model.tie_weights()
    left_on_meta = [name for name, t in model.state_dict().items() if t.is_meta]
    if left_on_meta:
        raise NotAFlorence2Checkpoint(f"conversion left weights without values: {left_on_meta[:5]}")
    model.save_pretrained(out, safe_serialization=True)
    _write_config(out / "config.json", native_config)

    image_processor = convert_image_processor(path)
    Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=POST_PROCESSOR_CONFIG
    ).save_pretrained(out)
    original_generation_config(remote_config["text_config"]).save_pretrained(out)
    log.info(
        "converted remote-code checkpoint (vocabulary %d -> %d, image token %d)",
        remote_vocab,
        vocab_size,
        tokenizer.image_token_id,
    )
    return out


def _write_config(path: Path, data: dict[str, Any]) -> None:
    saved = json.loads(path.read_text())
    saved.update({k: data[k] for k in ("architectures", "random_weights") if k in data})
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
