"""Builds a checkpoint laid out exactly like ``microsoft/Florence-2-large`` on the hub, from a native tiny one.

The file set and every key below are the hub's own (its ``config.json``, ``generation_config.json``,
``preprocessor_config.json``, tokenizer files and ``pytorch_model.bin``), with the tiny model's sizes and random
weights in place of the real ones. It is written from what the hub ships, not from what our conversion reads:
- ``config.json`` carries ``auto_map``, ``torch_dtype: float16`` and a ``florence2_language`` text config that
  holds the generation settings the original ``generate()`` runs with (decoder start 2, forced BOS 0 and EOS 2,
  ``no_repeat_ngram_size`` 3, 3 beams, early stopping);
- ``generation_config.json`` is the hub's two keys, which belong to the outer model and name no token ids;
- the tokenizer is BART's plain one (``vocab.json``, ``merges.txt``, ``tokenizer.json`` and a one-key
  ``tokenizer_config.json``): the original processor adds Florence-2's 1,024 tokens at load time, and the
  embeddings have exactly as many rows as the tokenizer then has tokens (51289 on the hub), so ``<image>`` has none;
- the weights are float16, in ``pytorch_model.bin``, under the original module names.
The modeling code files (``modeling_florence2.py`` ...) are not written: the conversion never runs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import BartTokenizerFast, Florence2ForConditionalGeneration

from export.remote_format import TRANSPOSED, remote_key
from export.tiny import FLORENCE_TASK_TOKENS

# The hub's generation_config.json, whole.
HUB_GENERATION_CONFIG: dict[str, Any] = {"num_beams": 3, "early_stopping": False}

# The generation settings of the hub's text_config, which the original generate() reads through its language model.
HUB_TEXT_GENERATION: dict[str, Any] = {
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "no_repeat_ngram_size": 3,
    "num_beams": 3,
    "early_stopping": True,
}


def plain_tokenizer(native: Path) -> BartTokenizerFast:
    """BART's tokenizer without Florence-2's tokens, as the hub ships it."""
    return BartTokenizerFast(vocab_file=str(native / "vocab.json"), merges_file=str(native / "merges.txt"))


def hub_rows(native: Path) -> int:
    """Embedding rows of the hub layout: the plain tokenizer's tokens plus the 1,024 the original processor adds."""
    return len(plain_tokenizer(native)) + len(FLORENCE_TASK_TOKENS)


def make_remote_checkpoint(native: Path, out: Path, *, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``native`` into ``out`` in the hub's remote-code layout (weights in ``dtype``, float16 as on the hub)."""
    out.mkdir(parents=True, exist_ok=True)
    model = Florence2ForConditionalGeneration.from_pretrained(native).eval()
    config = json.loads((native / "config.json").read_text())
    rows = hub_rows(native)

    remote: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        new = remote_key(key)
        assert new is not None, f"no remote name for {key}"
        value = tensor.t() if new in TRANSPOSED else tensor
        if key.endswith(("embed_tokens.weight", "shared.weight")) or key == "lm_head.weight":
            value = value[:rows]
        remote[new] = value.to(dtype).contiguous().clone()
    remote["language_model.final_logits_bias"] = torch.zeros(1, rows, dtype=dtype)
    torch.save(remote, out / "pytorch_model.bin")

    vision, text = config["vision_config"], config["text_config"]
    text_config = {
        "vocab_size": rows,
        "activation_dropout": 0.1,
        "activation_function": text["activation_function"],
        "add_bias_logits": False,
        "add_final_layer_norm": False,
        "attention_dropout": 0.1,
        "classif_dropout": 0.1,
        "classifier_dropout": 0.0,
        "d_model": text["d_model"],
        "decoder_attention_heads": text["decoder_attention_heads"],
        "decoder_ffn_dim": text["decoder_ffn_dim"],
        "decoder_layerdrop": 0.0,
        "decoder_layers": text["decoder_layers"],
        "dropout": 0.1,
        "encoder_attention_heads": text["encoder_attention_heads"],
        "encoder_ffn_dim": text["encoder_ffn_dim"],
        "encoder_layerdrop": 0.0,
        "encoder_layers": text["encoder_layers"],
        "gradient_checkpointing": False,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2},
        "max_position_embeddings": text["max_position_embeddings"],
        "normalize_before": False,
        "num_hidden_layers": text["encoder_layers"],
        "scale_embedding": False,
        **HUB_TEXT_GENERATION,
    }
    hub_config = {
        "_name_or_path": "florence2",
        "architectures": ["Florence2ForConditionalGeneration"],
        "auto_map": {
            "AutoConfig": "configuration_florence2.Florence2Config",
            "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration",
        },
        "bos_token_id": 0,
        "eos_token_id": 2,
        "ignore_index": -100,
        "model_type": "florence2",
        "pad_token_id": 1,
        "projection_dim": vision["projection_dim"],
        "text_config": text_config,
        "vision_config": {
            "model_type": "davit",
            "drop_path_rate": 0.1,
            "patch_size": vision["patch_size"],
            "patch_stride": vision["patch_stride"],
            "patch_padding": vision["patch_padding"],
            "patch_prenorm": vision["patch_prenorm"],
            "enable_checkpoint": False,
            "dim_embed": vision["embed_dim"],
            "num_heads": vision["num_heads"],
            "num_groups": vision["num_groups"],
            "depths": vision["depths"],
            "window_size": vision["window_size"],
            "projection_dim": vision["projection_dim"],
            "visual_temporal_embedding": {
                "type": "COSINE",
                "max_temporal_embeddings": vision["max_temporal_embeddings"],
            },
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": vision["max_position_embeddings"]},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
        "vocab_size": rows,
        "torch_dtype": "float16",
        "transformers_version": "4.41.0.dev0",
        "is_encoder_decoder": True,
    }
    _write(out / "config.json", hub_config)
    _write(out / "generation_config.json", HUB_GENERATION_CONFIG)

    tokenizer = plain_tokenizer(native)
    tokenizer.save_pretrained(out)
    for extra in ("special_tokens_map.json", "added_tokens.json"):
        (out / extra).unlink(missing_ok=True)
    _write(out / "tokenizer_config.json", {"model_max_length": 1024})

    preprocessor = json.loads((native / "preprocessor_config.json").read_text())
    _write(
        out / "preprocessor_config.json",
        {
            "auto_map": {"AutoProcessor": "processing_florence2.Florence2Processor"},
            "crop_size": preprocessor["crop_size"],
            "do_center_crop": False,
            "do_convert_rgb": None,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": preprocessor["image_mean"],
            "image_processor_type": "CLIPImageProcessor",
            "image_seq_length": preprocessor["image_seq_length"],
            "image_std": preprocessor["image_std"],
            "processor_class": "Florence2Processor",
            "resample": 3,
            "rescale_factor": 1 / 255,
            "size": preprocessor["size"],
        },
    )
    return out


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
