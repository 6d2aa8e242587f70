"""Conversion of the original remote-code checkpoint format to the native one, and its export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from remote_fixture import make_remote_checkpoint
from transformers import AutoTokenizer, Florence2ForConditionalGeneration

from export import remote_format
from export.errors import ExportError, NotAFlorence2Checkpoint
from export.exporter import export_model
from export.greedy import open_sessions
from export.source import CheckpointFormat, detect_format, read_config
from export.validate import generation_parity

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
def remote_full(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_remote_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("remote-full"))


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


def test_formats_are_told_apart(tiny_checkpoint: Path, remote_full: Path, tmp_path: Path) -> None:
    assert detect_format(read_config(tiny_checkpoint), tiny_checkpoint) is CheckpointFormat.NATIVE
    assert detect_format(read_config(remote_full), remote_full) is CheckpointFormat.REMOTE_CODE
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(NotAFlorence2Checkpoint, match="bert"):
        detect_format(read_config(tmp_path), tmp_path)


def test_conversion_gives_back_the_same_model(
    remote_full: Path, tiny_model: Any, tiny_checkpoint: Path, model_inputs: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    converted = remote_format.convert_checkpoint(remote_full, tmp_path / "native")
    model = Florence2ForConditionalGeneration.from_pretrained(converted, attn_implementation="eager").eval()
    assert model.config.image_token_id == tiny_model.config.image_token_id
    assert (
        AutoTokenizer.from_pretrained(converted).get_vocab()
        == AutoTokenizer.from_pretrained(tiny_checkpoint).get_vocab()
    )
    assert json.loads((converted / "preprocessor_config.json").read_text())["image_seq_length"] == 577
    assert torch.equal(_logits(model, model_inputs), _logits(tiny_model, model_inputs))


def test_conversion_with_a_wrong_map_is_caught(
    remote_full: Path,
    tiny_model: Any,
    model_inputs: dict[str, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # negative control: forget that the projection is stored transposed (square in the tiny model, so it loads)
    monkeypatch.setattr(remote_format, "TRANSPOSED", frozenset())
    converted = remote_format.convert_checkpoint(remote_full, tmp_path / "native")
    model = Florence2ForConditionalGeneration.from_pretrained(converted, attn_implementation="eager").eval()
    difference = (_logits(model, model_inputs) - _logits(tiny_model, model_inputs)).abs().max().item()
    assert difference > 1e-2


def test_conversion_grows_the_vocabulary_when_image_token_does_not_fit(
    tiny_checkpoint: Path, tiny_model: Any, model_inputs: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    # the hub checkpoints have exactly as many rows as tokens (51289), so <image> needs a new row
    rows = tiny_model.config.image_token_id
    remote = make_remote_checkpoint(tiny_checkpoint, tmp_path / "remote", vocab_rows=rows)
    model = Florence2ForConditionalGeneration.from_pretrained(
        remote_format.convert_checkpoint(remote, tmp_path / "native"), attn_implementation="eager"
    ).eval()
    assert model.config.text_config.vocab_size == -(-(rows + 1) // 64) * 64
    got, want = _logits(model, model_inputs), _logits(tiny_model, model_inputs)
    assert torch.equal(got[..., :rows], want[..., :rows])
    # the new rows hold the mean embedding: their logit is the mean logit, never the greedy choice
    assert (got[..., rows:].max(-1).values < got[..., :rows].max(-1).values).all()


def test_nonzero_logits_bias_refuses_to_convert() -> None:
    with pytest.raises(ExportError, match="final_logits_bias"):
        remote_format.convert_state_dict({"language_model.final_logits_bias": torch.ones(1, 4)})


def test_unknown_remote_weights_are_named() -> None:
    with pytest.raises(NotAFlorence2Checkpoint, match=r"vision_tower\.head\.weight"):
        remote_format.convert_state_dict({"vision_tower.head.weight": torch.zeros(2, 2)})


def test_remote_checkpoint_exports_to_a_matching_folder(
    remote_full: Path, tiny_model: Any, tiny_processor: Any, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    record = export_model(str(remote_full), out, dtypes=("fp32",), validate=False)
    assert record["source_format"] == "remote-code"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "florence2" and "auto_map" not in config and config["random_weights"] is True
    assert json.loads((out / "tokenizer_config.json").read_text())["extra_special_tokens"] == {"image_token": "<image>"}
    report = generation_parity(
        tiny_model, tiny_processor, open_sessions(out), tasks=[("<OD>", "<CAPTION>")], sizes=(384,)
    )
    assert report["token_exact"] == 2
