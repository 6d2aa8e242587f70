"""``variant=fastest``: the decision for each kind of CPU (fake features), the folder's offer, and the one log line."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from runtime.cpu import CpuFeatures
from runtime.engine.fastest import Choice, FolderOffer, decide, resolve
from runtime.engine.settings import EngineSettings
from runtime.model_folder import decoder_part_files

XEON_AMX = CpuFeatures.with_flags("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")
ZEN4 = CpuFeatures.with_flags("avx512_bf16", "avx512_vnni", "avx512f", "avx2")
SKYLAKE = CpuFeatures.with_flags("avx512f", "avx2")
CASCADE_LAKE = CpuFeatures.with_flags("avx512_vnni", "avx512f", "avx2")
EPYC_AVX2 = CpuFeatures.with_flags("avx2")
OLD = CpuFeatures.with_flags()

FULL = FolderOffer(onnxruntime=("fp32", "fp16", "int8"), openvino=("fp32", "fp16", "int8"))
NO_PARTS = FolderOffer(onnxruntime=("fp32", "int8"), openvino=())
FP32_ONLY = FolderOffer(onnxruntime=("fp32",), openvino=("fp32",))
Q8_ONLY = FolderOffer(onnxruntime=("fp32", "q8"), openvino=("fp32",))


def triple(choice: Choice) -> tuple[str, str, str]:
    return choice.backend, choice.precision, choice.variant


@pytest.mark.parametrize(
    ("cpu", "openvino", "offer", "expected"),
    [
        (XEON_AMX, True, FULL, ("openvino", "bf16", "fp32")),
        (XEON_AMX, False, FULL, ("onnxruntime", "f32", "int8")),  # no OpenVINO: int8 is next
        (XEON_AMX, True, NO_PARTS, ("onnxruntime", "f32", "int8")),  # no decoder parts: OpenVINO cannot run it
        (XEON_AMX, True, FolderOffer(("fp32",), ()), ("onnxruntime", "f32", "fp32")),
        (ZEN4, True, FULL, ("onnxruntime", "f32", "int8")),
        (ZEN4, True, FP32_ONLY, ("openvino", "bf16", "fp32")),  # bf16 vectors, no int8 files
        (ZEN4, False, FP32_ONLY, ("onnxruntime", "f32", "fp32")),
        (CASCADE_LAKE, True, FULL, ("onnxruntime", "f32", "int8")),
        (SKYLAKE, True, FULL, ("onnxruntime", "f32", "int8")),
        (SKYLAKE, True, FP32_ONLY, ("onnxruntime", "f32", "fp32")),  # no bf16 unit: OpenVINO would run f32
        (EPYC_AVX2, True, FULL, ("onnxruntime", "f32", "int8")),
        (EPYC_AVX2, True, Q8_ONLY, ("onnxruntime", "f32", "q8")),
        (EPYC_AVX2, True, FP32_ONLY, ("onnxruntime", "f32", "fp32")),
        (OLD, True, FULL, ("onnxruntime", "f32", "fp32")),  # no int8 dot products: int8 does not pay
    ],
)
def test_the_decision_for_each_kind_of_cpu(
    cpu: CpuFeatures, openvino: bool, offer: FolderOffer, expected: tuple[str, str, str]
) -> None:
    choice = decide(cpu, openvino, offer)
    assert triple(choice) == expected
    assert choice.reason


def test_a_named_backend_limits_the_decision() -> None:
    assert triple(decide(XEON_AMX, True, FULL, backends=("onnxruntime",))) == ("onnxruntime", "f32", "int8")
    assert triple(decide(EPYC_AVX2, True, FULL, backends=("openvino",))) == ("openvino", "f32", "int8")
    assert triple(decide(OLD, True, FULL, backends=("openvino",))) == ("openvino", "f32", "fp32")


def test_the_folder_offer_counts_decoder_parts_for_openvino(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert FolderOffer.of(tiny_model_dir) == FolderOffer(("fp32", "fp16", "int8"), ("fp32", "fp16", "int8"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for name in decoder_part_files("int8"):
        (folder / "onnx" / name).unlink()
    assert FolderOffer.of(folder).openvino == ("fp32", "fp16")


def test_resolve_logs_one_line_with_the_choice_and_why(tiny_model_dir: Path, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="runtime.engine.fastest"):
        settings = resolve(EngineSettings(variant="fastest"), tiny_model_dir, cpu=XEON_AMX, openvino_installed=True)
    assert (settings.backend, settings.precision, settings.variant) == ("openvino", "bf16", "fp32")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "backend openvino, precision bf16, variant fp32" in line
    assert "amx_bf16" in line and "openvino installed" in line
    untouched = EngineSettings(variant="int8")
    assert resolve(untouched, tiny_model_dir) is untouched
    on_gpu = resolve(EngineSettings(variant="fastest", provider="cuda"), tiny_model_dir, cpu=XEON_AMX)
    assert (on_gpu.backend, on_gpu.variant) == ("onnxruntime", "fp32")


def test_the_engine_serves_what_fastest_chose(tiny_model_dir: Path) -> None:
    from runtime.engine import load

    engine = load(tiny_model_dir, EngineSettings(variant="fastest", warmup=False))
    try:
        expected = resolve(EngineSettings(variant="fastest"), tiny_model_dir)
        assert engine.info.variant == expected.variant
        assert engine.runner.backend == expected.backend
        assert {v for _, v in engine.info.graph_variants} == {expected.variant}
    finally:
        asyncio.run(engine.close())
