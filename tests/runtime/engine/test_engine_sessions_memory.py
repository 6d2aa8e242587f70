"""Sessions and memory: what release_memory sets per graph, creation order and heap trimming, external weights."""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from engine_cases import noise_image, run_direct
from onnx import numpy_helper

import runtime.engine.onnxruntime_backend as sessions_module
from runtime.engine import EngineSettings, TaskRequest, load
from runtime.engine.model import Florence2Engine
from runtime.engine.onnxruntime_backend import release_free_heap
from runtime.engine.sessions import LOAD_ORDER, open_sessions
from runtime.model_folder import DECODER, EMBED_TOKENS, ENCODER, GRAPHS, VISION_ENCODER

SHRINKAGE = "memory.enable_memory_arena_shrinkage"


class RecordingSession:
    """An InferenceSession that records the run options each run was given."""

    def __init__(self, inner: ort.InferenceSession) -> None:
        self.inner = inner
        self.run_options: list[ort.RunOptions | None] = []

    def run(self, outputs: Any, feeds: Any, run_options: ort.RunOptions | None = None) -> Any:
        self.run_options.append(run_options)
        return self.inner.run(outputs, feeds, run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("release", [True, False])
def test_release_memory_setting_reaches_every_run(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, release: bool
) -> None:
    """With it, the encoders' runs shrink the CPU arena and start with a heap trim; the decoder, whose outputs
    outlive its runs, has no arena (so nothing to shrink); without it, none of this."""
    sessions = open_sessions(tiny_model_dir, EngineSettings(release_memory=release))
    recorders = {}
    for name, graph in sessions.graphs.items():
        recorders[name] = graph.session = RecordingSession(graph.session)  # type: ignore[assignment]
    trims: list[int] = []
    monkeypatch.setattr(sessions_module, "release_free_heap", lambda: trims.append(1))
    engine = load(tiny_model_dir, EngineSettings(release_memory=release, warmup=False), runner=sessions)
    try:
        run_direct(engine, [TaskRequest(image=noise_image((64, 48), 3), task="<CAPTION>", max_new_tokens=4)])
    finally:
        asyncio.run(engine.close())
    shrinking = {VISION_ENCODER, ENCODER, EMBED_TOKENS} if release else set()
    for name, recorder in recorders.items():
        assert recorder.run_options, f"{name} never ran"
        for options in recorder.run_options:
            assert options is not None
            if name in shrinking:
                assert options.get_run_config_entry(SHRINKAGE) == "cpu:0"
            else:
                with pytest.raises(RuntimeError, match="does not have configuration"):
                    options.get_run_config_entry(SHRINKAGE)
    encoder_runs = len(recorders[VISION_ENCODER].run_options) + len(recorders[ENCODER].run_options)
    assert len(trims) == (encoder_runs if release else 0)
    decoder_options = sessions.graph(DECODER).session.get_session_options()
    assert decoder_options.enable_cpu_mem_arena is not release
    assert sessions.graph(VISION_ENCODER).session.get_session_options().enable_cpu_mem_arena


def test_release_memory_keeps_the_tokens(tiny_model_dir: Path, engine: Florence2Engine) -> None:
    assert engine.settings.release_memory  # the default
    kept = load(tiny_model_dir, EngineSettings(release_memory=False, max_batch_size=16, warmup=False))
    requests = [
        TaskRequest(image=noise_image((96, 80), 5), task="<OD>", max_new_tokens=10, num_beams=1),
        TaskRequest(image=noise_image((60, 90), 6), task="<CAPTION>", max_new_tokens=7, num_beams=2),
    ]
    try:
        assert [r.token_ids for r in run_direct(kept, requests)] == [r.token_ids for r in run_direct(engine, requests)]
    finally:
        asyncio.run(kept.close())


def test_sessions_are_created_in_load_order_with_the_heap_trimmed_after_each(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    create = ort.InferenceSession

    def recording_create(path: str, **kwargs: Any) -> ort.InferenceSession:
        events.append(Path(path).stem)
        return create(path, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording_create)
    monkeypatch.setattr(sessions_module, "release_free_heap", lambda: events.append("trim"))
    sessions = open_sessions(tiny_model_dir, EngineSettings())
    assert LOAD_ORDER[0] == "decoder_model_merged" and sorted(LOAD_ORDER) == sorted(GRAPHS)
    assert events == [event for name in LOAD_ORDER for event in (name, "trim")]
    assert list(sessions.graphs) == list(GRAPHS)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's; RSS from /proc"
)
def test_release_free_heap_returns_freed_memory_to_the_system() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 64 << 10, 3200  # 200 MiB in blocks under glibc's mmap threshold: they come from the heap
    blocks = [libc.malloc(block) for _ in range(count)]
    assert all(blocks)
    for address in blocks:
        ctypes.memset(address, 1, block)
    for address in blocks[:-1]:  # the last block pins the heap's top, so free() itself cannot shrink it
        libc.free(address)
    try:
        before = _rss_bytes()
        release_free_heap()
        after = _rss_bytes()
    finally:
        libc.free(blocks[-1])
    assert before - after > 100 << 20, (before, after)


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _external_data_folder(source: Path, target: Path, scale: float = 1.0) -> Path:
    """``source``'s fp32 graphs with their weights in ``<graph>.onnx_data`` files (float weights times ``scale``)."""
    (target / "onnx").mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file():
            os.symlink(item, target / item.name)
    for name in GRAPHS:
        model = onnx.load(source / "onnx" / f"{name}.onnx")
        if scale != 1.0:
            for tensor in model.graph.initializer:
                array = numpy_helper.to_array(tensor)
                if array.dtype == np.float32 and array.size > 1:
                    tensor.CopyFrom(numpy_helper.from_array(array * np.float32(scale), tensor.name))
        onnx.save_model(
            model,
            target / "onnx" / f"{name}.onnx",
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=f"{name}.onnx_data",
            size_threshold=0,
        )
    return target


def test_graphs_with_external_weights_load_and_give_the_same_outputs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A folder whose graphs keep their weights in ``.onnx_data`` files (ONNX Runtime maps them instead of copying
    them through protobuf) loads as the single-file one does; scaled weights (the control) change the outputs."""
    external = _external_data_folder(tiny_model_dir, tmp_path / "external")
    assert (external / "onnx" / f"{ENCODER}.onnx_data").stat().st_size > 0
    scaled = _external_data_folder(tiny_model_dir, tmp_path / "scaled", scale=1.5)
    single = open_sessions(tiny_model_dir, EngineSettings())
    d_model = single.inputs(ENCODER)["inputs_embeds"].shape[2]
    assert isinstance(d_model, int)
    rng = np.random.default_rng(0)
    feeds = {
        "inputs_embeds": rng.standard_normal((2, 7, d_model), dtype=np.float32),
        "attention_mask": np.array([[1] * 7, [1] * 5 + [0] * 2], dtype=np.int64),
    }
    expected = single.run(ENCODER, feeds)[0]
    np.testing.assert_array_equal(open_sessions(external, EngineSettings()).run(ENCODER, feeds)[0], expected)
    assert not np.allclose(open_sessions(scaled, EngineSettings()).run(ENCODER, feeds)[0], expected, atol=1e-3)
