"""The OpenVINO backend: settings checks, what each graph is compiled with, the decoder parts, clear load errors.

Token parity with transformers runs on both backends in test_engine_parity.py.
"""

from __future__ import annotations

import asyncio
import builtins
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_cases import noise_image

from runtime.config import SettingsError, engine_settings
from runtime.engine import EngineSettings, TaskRequest, load
from runtime.engine.onnx_metadata import read_metadata
from runtime.engine.sessions import open_sessions
from runtime.engine.split_decoder import SplitDecoder
from runtime.errors import ModelLoadFailed
from runtime.model_folder import CROSS_CACHE_KEY, DECODER, GRAPHS, PER_REQUEST, VISION_ENCODER, decoder_part_files


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        EngineSettings(backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision must be one of"):
        EngineSettings(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="openvino backend runs on the CPU"):
        EngineSettings(backend="openvino", provider="cuda")
    with pytest.raises(ValueError, match="bf16 needs the openvino backend"):
        EngineSettings(precision="bf16")
    with pytest.raises(ValueError, match="bf16 needs the openvino backend"):
        EngineSettings(backend="onnxruntime", precision="bf16")
    assert EngineSettings(backend="openvino", precision="bf16").precision == "bf16"


def test_settings_come_from_the_environment() -> None:
    settings = engine_settings(
        {
            "FLORENCE_ENGINE_BACKEND": "openvino",
            "FLORENCE_ENGINE_PRECISION": "bf16",
            "FLORENCE_ENGINE_COMPILE_CACHE_DIR": "/tmp/ov-cache",
        }
    )
    assert (settings.backend, settings.precision, settings.compile_cache_dir) == ("openvino", "bf16", "/tmp/ov-cache")
    assert engine_settings({"FLORENCE_ENGINE_VARIANT": "fastest"}).variant == "fastest"
    with pytest.raises(SettingsError, match="bf16 needs the openvino backend"):
        engine_settings({"FLORENCE_ENGINE_PRECISION": "bf16"})


def test_a_missing_openvino_is_a_load_error_that_says_how_to_install_it(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def without_openvino(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_openvino)
    with pytest.raises(ModelLoadFailed, match=r"pip install -e \.\[openvino\]"):
        open_sessions(tiny_model_dir, EngineSettings(backend="openvino"))


def test_metadata_is_read_from_the_file_without_onnx(tiny_model_dir: Path, tmp_path: Path) -> None:
    onnx_dir = tiny_model_dir / "onnx"
    assert read_metadata(onnx_dir / "decoder_model_merged.onnx") == {CROSS_CACHE_KEY: PER_REQUEST}
    assert read_metadata(onnx_dir / decoder_part_files("int8")[1]) == {CROSS_CACHE_KEY: PER_REQUEST}
    assert read_metadata(onnx_dir / "vision_encoder.onnx") == {}
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x0f\xff")
    with pytest.raises(ValueError):
        read_metadata(broken)


# From here on OpenVINO itself is needed.


@pytest.fixture(scope="module")
def openvino() -> Any:
    return pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install -e .[openvino])")


def test_the_decoder_runs_as_its_two_parts(openvino: Any, tiny_model_dir: Path) -> None:
    sessions = open_sessions(tiny_model_dir, EngineSettings(backend="openvino", variant="int8"))
    assert sessions.backend == "openvino" and sessions.providers == ("OpenVINO:CPU",)
    assert sessions.variants() == dict.fromkeys(GRAPHS, "int8")
    decoder = sessions.graph(DECODER)
    assert isinstance(decoder, SplitDecoder)
    assert [p.name for p in decoder.paths] == list(decoder_part_files("int8"))
    assert sessions.metadata(DECODER)[CROSS_CACHE_KEY] == PER_REQUEST  # the shared cross-attention cache is used


@pytest.mark.parametrize("threads", [0, 1])
def test_precision_and_threads_reach_the_compiled_graphs(openvino: Any, tiny_model_dir: Path, threads: int) -> None:
    sessions = open_sessions(tiny_model_dir, EngineSettings(backend="openvino", intra_op_threads=threads))
    graphs = [sessions.graph(name) for name in GRAPHS if name != DECODER]
    graphs += [sessions.graph(DECODER).no_past, sessions.graph(DECODER).with_past]
    for graph in graphs:
        assert graph.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32, graph.path.name
        if threads:
            assert graph.compiled.get_property("INFERENCE_NUM_THREADS") == threads


def test_bf16_is_asked_for_and_used_where_the_cpu_has_a_bf16_unit(openvino: Any, tiny_model_dir: Path) -> None:
    """On a CPU without bf16 (AMD EPYC with AVX2) OpenVINO compiles f32 whatever it is asked; where the CPU
    offers BF16 the compiled graph reports it, which shows the hint arrived."""
    core = openvino.Core()
    has_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    sessions = open_sessions(tiny_model_dir, EngineSettings(backend="openvino", precision="bf16"))
    assert sessions.precision == "bf16"
    compiled = sessions.graph(VISION_ENCODER).compiled
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == (openvino.Type.bf16 if has_bf16 else openvino.Type.f32)
    assert sessions.graph(VISION_ENCODER).precision == ("bf16" if has_bf16 else "f32")


def test_the_compile_cache_is_written_and_reused(openvino: Any, tiny_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "compiled"
    settings = EngineSettings(backend="openvino", compile_cache_dir=str(cache))
    first = open_sessions(tiny_model_dir, settings)
    blobs = sorted(p.name for p in cache.iterdir())
    assert len(blobs) >= len(GRAPHS) + 1  # one per compiled file (the decoder is two)
    second = open_sessions(tiny_model_dir, settings)
    assert sorted(p.name for p in cache.iterdir()) == blobs  # reused, not compiled again
    pixels = np.random.default_rng(0).standard_normal((1, 3, 768, 768)).astype(np.float32)
    (a,) = first.run(VISION_ENCODER, {"pixel_values": pixels})
    (b,) = second.run(VISION_ENCODER, {"pixel_values": pixels})
    np.testing.assert_array_equal(a, b)


def test_a_folder_without_decoder_parts_says_which_command_adds_them(
    openvino: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for name in decoder_part_files("fp32"):
        (folder / "onnx" / name).unlink()
    with pytest.raises(ModelLoadFailed, match=rf"python -m export\.openvino_decoder {folder}"):
        open_sessions(folder, EngineSettings(backend="openvino"))
    open_sessions(folder, EngineSettings())  # ONNX Runtime runs the merged decoder


def test_a_graph_openvino_cannot_read_is_a_clear_load_error(
    openvino: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "onnx" / "encoder_model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelLoadFailed, match=r"OpenVINO cannot load .*encoder_model\.onnx"):
        open_sessions(folder, EngineSettings(backend="openvino"))


def test_the_engine_answers_on_openvino_as_on_onnx_runtime(openvino: Any, tiny_model_dir: Path) -> None:
    """Greedy and beam search through the same scheduler; parity with transformers is test_engine_parity.py's."""
    request = TaskRequest(image=noise_image((96, 80), seed=3), task="<CAPTION>", max_new_tokens=12, num_beams=3)
    answers = {}
    for backend in ("onnxruntime", "openvino"):
        engine = load(tiny_model_dir, EngineSettings(backend=backend, warmup=False))
        try:
            answers[backend] = asyncio.run(engine.run(request)).token_ids
            assert engine.info.providers == (("OpenVINO:CPU",) if backend == "openvino" else ("CPUExecutionProvider",))
        finally:
            asyncio.run(engine.close())
    assert answers["openvino"] == answers["onnxruntime"]
