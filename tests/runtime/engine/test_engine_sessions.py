"""Sessions: provider choice, variants and their fallback, settings, and how the decoder graph is driven."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_cases import noise_image, run_direct
from wrapped_runner import WrappedRunner

from runtime.engine import EngineSettings, TaskRequest, load
from runtime.engine.decoder import OrtDecoder
from runtime.engine.encoding import encode_prompts, image_features
from runtime.engine.model import Florence2Engine
from runtime.engine.onnxruntime_backend import choose_providers
from runtime.engine.sessions import GraphRunner, open_sessions
from runtime.errors import ModelLoadFailed
from runtime.model_folder import DECODER, GRAPHS


def test_provider_choice() -> None:
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("cpu", 0, cuda) == ["CPUExecutionProvider"]
    assert choose_providers("auto", 1, cuda) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert choose_providers("auto", 0, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadFailed, match="onnxruntime-gpu"):
        choose_providers("cuda", 0, ["CPUExecutionProvider"])


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="provider"):
        EngineSettings(provider="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch_size"):
        EngineSettings(max_batch_size=0)
    with pytest.raises(ValueError, match="variant"):
        EngineSettings(variant="int4")


def test_thread_and_optimization_settings_reach_the_sessions(tiny_model_dir: Path, caplog: Any) -> None:
    settings = EngineSettings(intra_op_threads=1, inter_op_threads=1, graph_optimization="basic")
    with caplog.at_level(logging.INFO, logger="runtime.engine.onnxruntime_backend"):
        sessions = open_sessions(tiny_model_dir, settings)
    options = sessions.graph(DECODER).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert "CPUExecutionProvider" in caplog.text and "graph optimization basic" in caplog.text


@pytest.mark.parametrize("prepack", [True, False])
def test_prepacking_setting_reaches_the_sessions_and_keeps_tokens(
    tiny_model_dir: Path, engine: Florence2Engine, prepack: bool
) -> None:
    sessions = open_sessions(tiny_model_dir, EngineSettings(prepack_weights=prepack))
    entries = sessions.graph(DECODER).session.get_session_options().get_session_config_entry
    assert entries("session.disable_prepacking") == ("0" if prepack else "1")
    other = load(tiny_model_dir, EngineSettings(prepack_weights=prepack, warmup=False), runner=sessions)
    request = TaskRequest(image=noise_image((96, 80), 5), task="<OD>", max_new_tokens=10, num_beams=1)
    try:
        assert run_direct(other, [request])[0].token_ids == run_direct(engine, [request])[0].token_ids
    finally:
        asyncio.run(other.close())


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_variants_load_and_generate(tiny_model_dir: Path, variant: str) -> None:
    engine = load(tiny_model_dir, EngineSettings(variant=variant, warmup=False))
    try:
        assert dict(engine.info.graph_variants) == dict.fromkeys(GRAPHS, variant)
        paths = {graph.path.name for graph in engine.runner.graphs.values()}  # type: ignore[attr-defined]
        assert all(name.endswith(f"_{variant}.onnx") for name in paths)
        result = asyncio.run(engine.run(TaskRequest(image=noise_image((80, 60), 1), task="<OD>", max_new_tokens=8)))
        assert result.completion_tokens == 8
    finally:
        asyncio.run(engine.close())


def test_a_missing_variant_is_an_error_unless_fallback_is_asked(
    tiny_model_dir: Path, tmp_path: Path, caplog: Any
) -> None:
    folder = tmp_path / "model"
    (folder / "onnx").mkdir(parents=True)
    for item in tiny_model_dir.iterdir():
        if item.is_file():
            os.symlink(item, folder / item.name)
    for item in (tiny_model_dir / "onnx").iterdir():
        if item.name != "encoder_model_int8.onnx":
            os.symlink(item, folder / "onnx" / item.name)
    with pytest.raises(ModelLoadFailed, match=r"encoder_model has no int8 file") as error:
        open_sessions(folder, EngineSettings(variant="int8"))
    assert "encoder_model: fp32, fp16;" in str(error.value)  # what the folder has, to choose from
    assert "FLORENCE_ENGINE_VARIANT_FALLBACK" in str(error.value)
    with caplog.at_level(logging.WARNING, logger="runtime.engine.sessions"):
        sessions = open_sessions(folder, EngineSettings(variant="int8", variant_fallback=True))
    assert sessions.variants() == {**dict.fromkeys(GRAPHS, "int8"), "encoder_model": "fp32"}
    assert "encoder_model has no int8 file" in caplog.text
    sessions = open_sessions(folder, EngineSettings(variant="int8,encoder_model=fp16"))
    assert sessions.variants() == {**dict.fromkeys(GRAPHS, "int8"), "encoder_model": "fp16"}
    (folder / "onnx" / "encoder_model.onnx").unlink()
    with pytest.raises(ModelLoadFailed, match=r"encoder_model has no int8 file"):
        open_sessions(folder, EngineSettings(variant="int8", variant_fallback=True))


def test_a_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="not a model folder"):
        load(tmp_path)


class Recording(WrappedRunner):
    def __init__(self, inner: GraphRunner) -> None:
        super().__init__(inner)
        self.calls: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (feeds, outputs by name) per decoder run

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        values = self.inner.run(graph, feeds, outputs)
        if graph == DECODER:
            self.calls.append((dict(feeds), dict(zip(outputs or [], values, strict=True))))
        return values


def test_decoder_cache_protocol(engine: Florence2Engine) -> None:
    """Empty past and no cache first; then the cache branch, with the cross-attention KV computed once and the
    self-attention KV passed on as returned (greedy: no reorder, no copy)."""
    recording = Recording(engine.runner)
    job = engine.prepare(TaskRequest(image=noise_image((50, 70), 2), task="<CAPTION>"))
    features = image_features(recording, engine.processor.preprocess([job.request.image]))
    encoded = encode_prompts(recording, features, [job.prompt_ids], engine.processor.pad_id)
    decoder = OrtDecoder(recording, encoded.hidden_states, encoded.attention_mask)
    decoder.start(np.array([2]))
    for token in (0, 5, 6):
        decoder.select([np.array([0])], np.array([0]))
        decoder.step(np.array([token]))
    (first, first_outputs), *later = recording.calls
    assert len(later) == 3
    assert not first["use_cache_branch"][0]
    assert all(v.shape[2] == 0 for k, v in first.items() if k.startswith("past_key_values."))
    cross = "past_key_values.0.encoder.key"
    assert later[0][0][cross] is first_outputs["present.0.encoder.key"]
    previous = first_outputs
    for step, (feeds, outputs) in enumerate(later, start=1):
        assert feeds["use_cache_branch"][0]
        assert not any(".encoder." in name for name in outputs)  # cross-attention KV is not recomputed
        assert feeds[cross] is first_outputs["present.0.encoder.key"]
        assert feeds["past_key_values.1.decoder.value"] is previous["present.1.decoder.value"]
        assert feeds["past_key_values.1.decoder.value"].shape[2] == step
        previous = outputs


def test_io_binding_path_gives_the_same_tokens(tiny_model_dir: Path, engine: Florence2Engine) -> None:
    """The path that keeps the KV cache in OrtValues (CUDA's) runs on CPU too when asked for."""
    bound = load(tiny_model_dir, EngineSettings(io_binding=True, warmup=False))
    try:
        assert bound.runner.io_binding  # type: ignore[attr-defined]
        requests = [
            TaskRequest(image=noise_image((90, 60), 1), task="<OD>", max_new_tokens=9, num_beams=3),
            TaskRequest(image=noise_image((60, 90), 2), task="<CAPTION>", max_new_tokens=5, num_beams=1),
            TaskRequest(image=noise_image((70, 70), 3), task="<OCR>", max_new_tokens=12, num_beams=2),
        ]
        expected = run_direct(engine, requests)
        got = run_direct(bound, requests)
        assert [r.token_ids for r in got] == [r.token_ids for r in expected]
    finally:
        asyncio.run(bound.close())
