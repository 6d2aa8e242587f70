"""Conversion of the original remote-code checkpoints (laid out as microsoft/Florence-2-large is on the hub) to the
native layout, and their export with validation on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hub_checkpoint import HUB_GENERATION_CONFIG, HUB_TEXT_GENERATION, hub_rows, make_remote_checkpoint
from transformers import AutoTokenizer, Florence2ForConditionalGeneration

from export import remote_format
from export.cli import main as export_main
from export.errors import ExportError, NotAFlorence2Checkpoint
from export.source import CheckpointFormat, detect_format, read_config

# Names as the original checkpoints and transformers' conversion script spell them.
KNOWN_PAIRS: tuple[tuple[str, str], ...] = (
    (
        "vision_tower.convs.0.proj.weight",
        "model.vision_tower.convs.0.conv.weight",
    ),
    (
        "vision_tower.blocks.2.1.spatial_block.conv1.fn.dw.bias",
        "model.vision_tower.blocks.2.1.spatial_block.conv1.bias",
    ),
    (
        "vision_tower.blocks.2.1.spatial_block.window_attn.norm.weight",
        "model.vision_tower.blocks.2.1.spatial_block.norm1.weight",
    ),
    (
        "vision_tower.blocks.2.1.spatial_block.window_attn.fn.qkv.weight",
        "model.vision_tower.blocks.2.1.spatial_block.window_attn.qkv.weight",
    ),
    (
        "vision_tower.blocks.0.0.channel_block.channel_attn.fn.proj.bias",
        "model.vision_tower.blocks.0.0.channel_block.channel_attn.proj.bias",
    ),
    (
        "vision_tower.blocks.3.0.channel_block.ffn.fn.net.fc2.weight",
        "model.vision_tower.blocks.3.0.channel_block.ffn.fc2.weight",
    ),
    (
        "vision_tower.blocks.3.0.channel_block.ffn.norm.bias",
        "model.vision_tower.blocks.3.0.channel_block.norm2.bias",
    ),
    (
        "image_projection",
        "model.multi_modal_projector.image_projection.weight",
    ),
    (
        "image_pos_embed.column_embeddings.weight",
        "model.multi_modal_projector.image_position_embed.column_embeddings.weight",
    ),
    (
        "visual_temporal_embed.pos_idx_to_embed",
        "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed",
    ),
    (
        "language_model.model.encoder.layers.0.fc1.weight",
        "model.language_model.encoder.layers.0.fc1.weight",
    ),
    (
        "language_model.lm_head.weight",
        "lm_head.weight",
    ),
)


@pytest.fixture(scope="module")
def original(tiny_model: Any) -> Any:
    """The model the hub layout holds: the tiny model with its weights rounded to float16, as the hub stores them."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())
    return model


def _logits(model: Any, model_inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**model_inputs).logits


@pytest.fixture(scope="module")
def model_inputs(tiny_processor: Any) -> dict[str, torch.Tensor]:
    from PIL import Image

    image = Image.new("RGB", (320, 240), (200, 40, 90))
    inputs = tiny_processor(text=["<OD>"], images=[image], return_tensors="pt")
    inputs["decoder_input_ids"] = torch.tensor([[2, 0, 57, 812]])
    return dict(inputs)


def test_key_map_matches_the_original_names_and_inverts(tiny_model: Any) -> None:
    for remote, native in KNOWN_PAIRS:
        assert remote_format.native_key(remote) == native
        assert remote_format.remote_key(native) == remote
    names = list(tiny_model.state_dict())
    remote_names = [remote_format.remote_key(k) for k in names]
    assert None not in remote_names
    assert len(set(remote_names)) == len(names)
    assert [remote_format.native_key(r) for r in remote_names] == names


def test_formats_are_told_apart(tiny_checkpoint: Path, hub_checkpoint: Path, tmp_path: Path) -> None:
    assert detect_format(read_config(tiny_checkpoint), tiny_checkpoint) is CheckpointFormat.NATIVE
    assert detect_format(read_config(hub_checkpoint), hub_checkpoint) is CheckpointFormat.REMOTE_CODE
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(NotAFlorence2Checkpoint, match="bert"):
        detect_format(read_config(tmp_path), tmp_path)


def test_conversion_gives_back_the_original_model(
    hub_native_checkpoint: Path,
    tiny_checkpoint: Path,
    tiny_model: Any,
    original: Any,
    model_inputs: dict[str, torch.Tensor],
) -> None:
    model = Florence2ForConditionalGeneration.from_pretrained(hub_native_checkpoint, attn_implementation="eager").eval()
    assert model.config.image_token_id == tiny_model.config.image_token_id
    assert (
        AutoTokenizer.from_pretrained(hub_native_checkpoint).get_vocab()
        == AutoTokenizer.from_pretrained(tiny_checkpoint).get_vocab()
    )
    assert json.loads((hub_native_checkpoint / "preprocessor_config.json").read_text())["image_seq_length"] == 577
    # the hub's rows are exactly its tokens (51289 there), so <image> needs a new row: the table grows to a
    # multiple of 64 and every original row gives exactly the original logit
    rows = hub_rows(tiny_checkpoint)
    assert rows == tiny_model.config.image_token_id
    assert model.config.text_config.vocab_size == -(-(rows + 1) // 64) * 64
    got, want = _logits(model, model_inputs), _logits(original, model_inputs)
    assert torch.equal(got[..., :rows], want[..., :rows])
    # the new rows hold the mean embedding: their logit is the mean logit, never the greedy choice
    assert (got[..., rows:].max(-1).values < got[..., :rows].max(-1).values).all()


def test_conversion_with_a_wrong_map_is_caught(
    hub_checkpoint: Path,
    tiny_checkpoint: Path,
    original: Any,
    model_inputs: dict[str, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # negative control: forget that the projection is stored transposed (square in the tiny model, so it loads)
    monkeypatch.setattr(remote_format, "TRANSPOSED", frozenset())
    converted = remote_format.convert_checkpoint(hub_checkpoint, tmp_path / "native")
    model = Florence2ForConditionalGeneration.from_pretrained(converted, attn_implementation="eager").eval()
    rows = hub_rows(tiny_checkpoint)
    difference = (_logits(model, model_inputs) - _logits(original, model_inputs))[..., :rows].abs().max().item()
    assert difference > 1e-2


def test_generation_config_is_the_one_the_original_generate_uses(hub_native_checkpoint: Path) -> None:
    """The hub's generation_config.json (two keys, no ids) is the outer model's; the original generate() runs
    the language model, whose settings come from text_config. The converted file carries those."""
    converted = json.loads((hub_native_checkpoint / "generation_config.json").read_text())
    assert HUB_GENERATION_CONFIG["early_stopping"] != HUB_TEXT_GENERATION["early_stopping"]  # the files disagree
    assert {k: converted.get(k) for k in HUB_TEXT_GENERATION} == HUB_TEXT_GENERATION
    assert converted["max_length"] == 1025  # the model card's max_new_tokens=1024, not transformers' default 20


@pytest.mark.slow  # a whole export with validation against PyTorch
def test_hub_checkpoint_exports_with_validation(hub_checkpoint: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "model"
    assert export_main([str(hub_checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err
    record = json.loads((out / "export.json").read_text())
    assert record["source_format"] == "remote-code" and record["validated"] is True
    generation = record["parity"]["fp32"]["generation"]
    assert generation["sequences"] == generation["token_exact"] + len(generation["near_tie_divergences"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "florence2" and "auto_map" not in config
    assert json.loads((out / "tokenizer_config.json").read_text())["extra_special_tokens"] == {"image_token": "<image>"}
    saved = json.loads((out / "generation_config.json").read_text())
    assert {k: saved.get(k) for k in HUB_TEXT_GENERATION} == HUB_TEXT_GENERATION


def test_a_validation_that_breaks_exits_5_without_a_traceback(
    hub_checkpoint: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import export.validate

    def broken(*args: Any, **kwargs: Any) -> Any:
        return int(None)  # type: ignore[arg-type]  # the failure the unconverted hub generation config caused

    monkeypatch.setattr(export.validate, "validate_export", broken)
    out = tmp_path / "model"
    assert export_main([str(hub_checkpoint), "--out", str(out)]) == 5
    err = capsys.readouterr().err
    assert "validation against PyTorch could not run (TypeError: int() argument" in err
    assert "Traceback" not in err
    assert not (out / "export.json").exists()


def test_hub_layout_without_text_generation_settings_gets_the_original_defaults(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A text_config silent on ids gets those of the original Florence2LanguageConfig (BART's)."""
    remote = make_remote_checkpoint(tiny_checkpoint, tmp_path / "remote")
    config = json.loads((remote / "config.json").read_text())
    for key in HUB_TEXT_GENERATION:
        del config["text_config"][key]
    (remote / "config.json").write_text(json.dumps(config))
    converted = remote_format.convert_checkpoint(remote, tmp_path / "native")
    saved = json.loads((converted / "generation_config.json").read_text())
    assert (saved["decoder_start_token_id"], saved["eos_token_id"], saved["pad_token_id"]) == (2, 2, 1)
    assert saved["forced_eos_token_id"] == 2 and "no_repeat_ngram_size" not in saved


def test_nonzero_logits_bias_refuses_to_convert() -> None:
    with pytest.raises(ExportError, match="final_logits_bias"):
        remote_format.convert_state_dict({"language_model.final_logits_bias": torch.ones(1, 4)})


def test_unknown_remote_weights_are_named() -> None:
    with pytest.raises(NotAFlorence2Checkpoint, match=r"vision_tower\.head\.weight"):
        remote_format.convert_state_dict({"vision_tower.head.weight": torch.zeros(2, 2)})
