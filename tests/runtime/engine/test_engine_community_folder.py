"""onnx-community folders: every transformers.js dtype suffix, per-graph variants, no silent fallback, split decoders.

The folder (community_folder.py) is the tiny model converted the ways those folders are made; some graphs hold
their weights inline, some in side files, and two variants ship the decoder unmerged.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from community_folder import INLINE_VARIANTS, PARTS, SUFFIXES, UNMERGED_VARIANTS
from engine_cases import noise_image, run_direct

from runtime.engine import EngineSettings, TaskRequest, load
from runtime.engine.decoder import OrtDecoder
from runtime.engine.encoding import encode_prompts, image_features
from runtime.engine.sessions import GRAPHS, Sessions, open_sessions
from runtime.engine.split_decoder import SplitDecoder
from runtime.errors import ModelLoadFailed


def requests() -> list[TaskRequest]:
    return [
        TaskRequest(image=noise_image((80, 60), 1), task="<OD>", max_new_tokens=6, num_beams=1, ignore_eos=True),
        TaskRequest(image=noise_image((60, 80), 2), task="<CAPTION>", max_new_tokens=5, num_beams=3),
    ]


def file_names(sessions: Sessions) -> dict[str, tuple[str, ...]]:
    return {
        name: tuple(p.name for p in (graph.paths if isinstance(graph, SplitDecoder) else (graph.path,)))
        for name, graph in sessions.graphs.items()
    }


@pytest.mark.parametrize("variant", list(SUFFIXES))
def test_every_suffix_loads_and_generates(community_model_dir: Path, variant: str) -> None:
    suffix = SUFFIXES[variant]
    engine = load(community_model_dir, EngineSettings(variant=variant, warmup=False))
    try:
        assert dict(engine.info.graph_variants) == dict.fromkeys(GRAPHS, variant)
        names = file_names(engine.runner)  # type: ignore[arg-type]
        expected_decoder = (
            tuple(f"{part}{suffix}.onnx" for part in PARTS)
            if variant in UNMERGED_VARIANTS
            else (f"decoder_model_merged{suffix}.onnx",)
        )
        assert names == {
            **{g: (f"{g}{suffix}.onnx",) for g in GRAPHS if g != "decoder_model_merged"},
            "decoder_model_merged": expected_decoder,
        }
        inline = not (community_model_dir / "onnx" / f"vision_encoder{suffix}.onnx_data").exists()
        assert inline == (variant in INLINE_VARIANTS)
        greedy, beams = run_direct(engine, requests())
        assert greedy.completion_tokens == 6 and greedy.finish_reason == "length"
        assert 1 <= beams.completion_tokens <= 5 and isinstance(beams.parsed["<CAPTION>"], str)
    finally:
        asyncio.run(engine.close())


@pytest.mark.parametrize("io_binding", [False, True])
def test_a_split_decoder_computes_what_the_merged_one_does(
    tiny_model_dir: Path, community_model_dir: Path, io_binding: bool
) -> None:
    """The fp32 parts against our merged fp32 decoder, on the same encoder states: first step and three cached
    steps, two requests with two rows each after a reorder."""
    settings = EngineSettings(warmup=False, io_binding=io_binding)
    merged, split = open_sessions(tiny_model_dir, settings), open_sessions(community_model_dir, settings)
    assert isinstance(split.graph("decoder_model_merged"), SplitDecoder)
    images = np.stack([np.random.default_rng(seed).random((3, 64, 64), np.float32) for seed in (1, 2)])
    features = image_features(merged, images)
    encoded = encode_prompts(merged, features, [[0, 100, 200, 2], [0, 300, 2]], pad_id=1)
    decoders = [OrtDecoder(runner, encoded.hidden_states, encoded.attention_mask) for runner in (merged, split)]
    logits = [d.start(np.array([2, 2])) for d in decoders]
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-4)
    for d in decoders:
        d.select([np.array([0, 0]), np.array([1, 1])], np.array([0, 1]))
    for tokens in ([5, 6, 7, 8], [9, 9, 10, 11], [12, 13, 14, 15]):
        logits = [d.step(np.array(tokens)) for d in decoders]
        np.testing.assert_allclose(logits[1], logits[0], atol=1e-4)


def test_per_graph_variants(community_model_dir: Path) -> None:
    choice = "fp32,vision_encoder=uint8,encoder_model=bnb4,decoder_model_merged=q4f16"
    sessions = open_sessions(community_model_dir, EngineSettings(variant=choice, warmup=False))
    assert sessions.variants() == {
        "vision_encoder": "uint8",
        "embed_tokens": "fp32",
        "encoder_model": "bnb4",
        "decoder_model_merged": "q4f16",
    }
    assert file_names(sessions)["decoder_model_merged"] == ("decoder_model_merged_q4f16.onnx",)


def without(folder: Path, tmp_path: Path, drop: str) -> Path:
    """A view of ``folder`` without its onnx files whose names contain ``drop``."""
    view = tmp_path / "view"
    (view / "onnx").mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file():
            os.symlink(item, view / item.name)
    for item in (folder / "onnx").iterdir():
        if drop not in item.name:
            os.symlink(item, view / "onnx" / item.name)
    return view


def test_a_folder_whose_only_8bit_files_are_uint8_does_not_fall_back_silently(
    community_model_dir: Path, tmp_path: Path
) -> None:
    folder = without(community_model_dir, tmp_path, "_int8")
    with pytest.raises(ModelLoadFailed) as error:
        open_sessions(folder, EngineSettings(variant="int8", warmup=False))
    message = str(error.value)
    assert "has no int8 file" in message
    assert "vision_encoder: fp32, fp16, uint8, q8, q4, q4f16, bnb4" in message  # what there is to choose from
    assert "decoder_model_merged: fp32, fp16, uint8, q8, q4, q4f16, bnb4" in message  # split fp32 and uint8 count
    sessions = open_sessions(folder, EngineSettings(variant="int8", variant_fallback=True, warmup=False))
    assert sessions.variants() == dict.fromkeys(GRAPHS, "fp32")
    assert open_sessions(folder, EngineSettings(variant="uint8", warmup=False)).variants() == dict.fromkeys(
        GRAPHS, "uint8"
    )


def test_a_decoder_part_alone_is_not_a_decoder(community_model_dir: Path, tmp_path: Path) -> None:
    folder = without(community_model_dir, tmp_path, "decoder_with_past_model.onnx")
    with pytest.raises(ModelLoadFailed, match="decoder_model_merged has no fp32 file"):
        open_sessions(folder, EngineSettings(warmup=False))
