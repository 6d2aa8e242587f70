"""The best peer and the targets from known measurements: the fastest PyTorch contender, ratios taken to it within
rounds, floors at each contender's precision, the served-over-HTTP ratio."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import machine, report, summary
from bench.contenders import ContenderSpec
from bench.measurement import Measurement
from bench.side_by_side import ContenderOutcome
from bench.workload import Job

JOB = Job(20, 1)


def _outcome(name: str, kind: str, end_to_end: list[float | None], **spec: Any) -> ContenderOutcome:
    """One run per round; None: a vision-only run (the stage alone, no end to end)."""
    outcome = ContenderOutcome(ContenderSpec(name, kind, Path("."), **spec))
    stages = {"vision_encoder": 1.0, "per_token_decode": 0.01}
    outcome.runs[JOB.key] = [Measurement(stages, e, 20, 590) for e in end_to_end]
    return outcome


def test_the_best_peer_is_the_fastest_pytorch_contender_and_ratios_are_taken_to_it() -> None:
    fp32 = _outcome("pytorch-eager", "torch", [8.0, 9.0])
    bf16 = _outcome("pytorch-eager-bf16", "torch", [4.0, 3.0], precision="bf16")
    engine = _outcome("engine-fp32", "engine", [2.0, 3.0])  # faster, but not a peer
    vision_only = _outcome("openvino-vision-bf16", "openvino", [None, None], precision="bf16")
    assert summary.best_peer([fp32, engine, bf16, vision_only], JOB) is bf16
    assert summary.best_peer([engine, vision_only], JOB) is None
    entry = summary.summarise_contender(engine, fp32, bf16)[JOB.key]
    assert entry["ratio_to_best_peer"]["end_to_end_rounds"] == [0.5, 1.0]
    assert entry["ratio_to_reference"]["end_to_end_rounds"] == [0.25, pytest.approx(1 / 3)]
    assert "ratio_to_best_peer" not in summary.summarise_contender(bf16, fp32, bf16)[JOB.key]


def test_a_vision_only_contender_has_no_end_to_end_figures() -> None:
    fp32 = _outcome("pytorch-eager", "torch", [8.0, 9.0])
    vision_only = _outcome("openvino-vision-f32", "openvino", [None, None], precision="f32")
    entry = summary.summarise_contender(vision_only, fp32, fp32)[JOB.key]
    assert entry["end_to_end_s"] is None and entry["stages_s"]["vision_encoder"] == 1.0
    assert "end_to_end" not in entry["ratio_to_reference"] and entry["ratio_to_reference"]["vision_encoder"] == 1.0


def _rates(**extra: Any) -> machine.MachineRates:
    return machine.MachineRates(
        ort_matmul_gflops=100.0,
        numpy_matmul_gflops=80.0,
        ort_fp16_matmul_gflops=None,
        numpy_memory_read_gbps=10.0,
        ort_memory_read_gbps=8.0,
        memory_copy_gbps=12.0,
        cores=2,
        providers=("CPUExecutionProvider",),
        **extra,
    )


def test_rates_by_precision_take_the_best_probe_and_none_where_nothing_ran() -> None:
    rates = _rates(torch_matmul_gflops=120.0, torch_bf16_matmul_gflops=700.0, openvino_bf16_matmul_gflops=900.0)
    assert rates.matmul_rate("fp32") == 120.0 and rates.matmul_rate("bf16") == 900.0
    assert rates.matmul_rate("int8") is None
    both = machine.best_of([rates, _rates(ort_int8_matmul_gops=300.0, skipped=(("torch_bf16", "no unit"),))])
    assert both.matmul_rate("int8") == 300.0 and both.matmul_rate("bf16") == 900.0
    assert both.to_dict()["skipped"] == {"torch_bf16": "no unit"}


def test_a_probe_far_below_fp32_is_called_emulated_and_stops() -> None:
    a = np.ones((256, 256), dtype=np.float32)
    machine._guard_emulated(lambda: a @ a, "numpy fp32")  # the yardstick itself passes
    with pytest.raises(machine.ProbeSkipped, match=r"slow kernel: .* emulated"):
        machine._guard_emulated(lambda: time.sleep(0.5), "slow kernel")  # 0.07 GFLOP/s at most


def _contender(kind: str, variant: str, precision: str | None, **figures: Any) -> dict[str, Any]:
    entry = {
        "end_to_end_s": figures.get("end_to_end_s"),
        "stages_s": figures.get("stages_s", {}),
        "ratio_to_reference": {"end_to_end": figures["fp32_ratio"]} if "fp32_ratio" in figures else {},
        "ratio_to_best_peer": {"end_to_end": figures["peer_ratio"]} if "peer_ratio" in figures else {},
    }
    return {"kind": kind, "variant": variant, "precision": precision, "backend": None, "summary": {JOB.key: entry}}


def _floors() -> summary.Floors:
    return summary.Floors(
        flops={"vision_encoder": 1e12},
        compute_s={"vision_encoder": 10.0},  # fp32 at 100 GFLOP/s
        decode_bandwidth_s={"fp32": 0.100, "int8": 0.025},
        compute_s_by_precision={"bf16": {"vision_encoder": 1.0}, "int8": {"vision_encoder": 4.0}},
    )


def test_targets_from_known_measurements() -> None:
    contenders = {
        "pytorch-eager": _contender("torch", "fp32", None, end_to_end_s=8.0),
        "pytorch-eager-bf16": _contender("torch", "fp32", "bf16", end_to_end_s=4.0, fp32_ratio=0.5),
        "engine-fp32": _contender(
            "engine",
            "fp32",
            None,
            end_to_end_s=6.0,
            fp32_ratio=0.75,
            peer_ratio=1.5,
            stages_s={"vision_encoder": 5.0, "per_token_decode": 0.2},
        ),
        "engine-int8": _contender(
            "engine",
            "int8",
            None,
            end_to_end_s=3.6,
            fp32_ratio=0.45,
            peer_ratio=0.9,
            stages_s={"vision_encoder": 4.6, "text_encoder": 1.0, "per_token_decode": 0.03},
        ),
        "openvino-vision-bf16": _contender("openvino", "fp32", "bf16", stages_s={"vision_encoder": 1.2}),
    }
    server = {
        "contender": "engine-fp32",
        "max_tokens": 20,
        "beams": 1,
        "levels": [{"concurrency": 1, "latency_s": {"p50": 6.6}}, {"concurrency": 8, "latency_s": {"p50": 9.0}}],
        "scaling": {"8": 1.5},
        "overhead": {"p50_ms": 12.0},
        "rss": {"peak_over_weights": 1.2},
    }
    found = summary.targets(contenders, {JOB.key: _floors()}, JOB, server, best_peer="pytorch-eager-bf16")
    by_start = {t.name.split(",")[0].split(":")[0]: t for t in found}
    assert len(found) == 8

    best = found[0]
    assert best.name.endswith("best engine configuration / best PyTorch (pytorch-eager-bf16)")
    assert (best.measured, best.met) == (0.9, False)
    assert best.note.startswith("engine-int8 / pytorch-eager-bf16; fp32-to-fp32 (to pytorch-eager) 0.45x")
    assert "largest stage: vision_encoder 4.60 s" in best.note

    vision = by_start["vision encoder"]  # the bf16 OpenVINO graph is fastest: its bf16 floor
    assert (vision.measured, vision.met, vision.note) == (pytest.approx(1.2), True, "openvino-vision-bf16, bf16 floor")

    decode = by_start["per-token decode"]  # int8 reads a quarter of the bytes: its own floor
    assert (decode.measured, decode.met) == (pytest.approx(1.2), True)
    assert decode.note == "engine-int8: 30.0 ms, floor 25.0 ms"

    served = by_start["served over HTTP"]
    assert (served.measured, served.met) == (pytest.approx(1.1), False)
    assert served.note == "engine-fp32, tokens20_beams1: served p50 6.60 s, in process 6.00 s"

    fp32 = found[4]
    assert fp32.name.endswith("engine fp32 on ONNX Runtime / PyTorch fp32")
    assert (fp32.measured, fp32.met) == (0.75, False)


def test_without_a_bf16_unit_the_fp32_peer_and_fp32_floors_stand() -> None:
    contenders = {
        "pytorch-eager": _contender("torch", "fp32", None, end_to_end_s=8.0),
        "engine-fp32": _contender(
            "engine", "fp32", None, end_to_end_s=3.2, fp32_ratio=0.4, stages_s={"vision_encoder": 12.0}
        ),
    }
    floors = summary.Floors(flops={}, compute_s={"vision_encoder": 10.0}, decode_bandwidth_s={})
    found = summary.targets(contenders, {JOB.key: floors}, JOB, None)
    assert found[0].name.endswith("/ best PyTorch (pytorch-eager)") and (found[0].measured, found[0].met) == (0.4, True)
    assert found[1].measured == pytest.approx(1.2) and found[1].note == "engine-fp32, fp32 floor"
    assert found[3].measured is None and "no in-process contender" not in found[3].note  # no server ran
    assert len(found) == 5


def test_a_bf16_decode_reads_half_the_fp32_bytes() -> None:
    floors = _floors()
    assert floors.decode_floor_s("fp32", "bf16") == pytest.approx(0.05)
    assert floors.decode_floor_s("fp32", "fp32") == pytest.approx(0.1)
    assert floors.decode_floor_s("int8", "int8") == pytest.approx(0.025)
    assert floors.compute_floor_s("bf16", "vision_encoder") == 1.0 and floors.compute_floor_s("fp16", "x") is None


def test_the_report_names_the_machine_and_the_best_peer() -> None:
    results = {
        "date": "2026-01-01T000000",
        "machine": {
            "cpu": "Intel Xeon",
            "cores": 2,
            "onnxruntime": "1",
            "load_average_start": [0.0],
            "cpu_features": {
                "features": {"amx_bf16": True, "avx2": True, "avx512_fp16": False},
                "source": "/proc/cpuinfo",
                "bf16_unit": True,
                "int8_dot_product": True,
            },
        },
        "model": {"arch": "tiny", "model_dir": "m", "variants": ["fp32"]},
        "rates": {"matmul_rate_by_precision": {"fp32": 333.0, "bf16": 2312.0, "int8": None}, "skipped": {}},
        "best_peer": {"name": "pytorch-eager-bf16", "rule": "the fastest", "end_to_end_s": {"pytorch-eager": 8.6}},
    }
    text = report.markdown(results, JOB)
    assert "CPU: Intel Xeon, 2 cores; features: amx_bf16, avx2. bf16 unit (AMX or AVX-512 BF16): yes" in text
    assert "Matmul rate by precision (GFLOP/s; GOP/s for int8): fp32 333; bf16 2,312." in text
    assert "Best peer: **pytorch-eager-bf16**, the fastest (pytorch-eager 8,600.0 ms)." in text
