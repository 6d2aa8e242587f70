"""The vision encoder's profile by operator: the parser on a synthetic ONNX Runtime profile, the figures in units of
the floor, the report section and the target's note, and one real profiling run on the tiny model's vision graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report, summary
from bench.cli import profiled_variants
from bench.settings import from_args
from bench.vision_profile import ProfileFailed, parse_profile, profile_in_child
from bench.workload import Job


def _kernel(
    node: str, op: str, ts: int, dur: int, inputs: list[Any] | None = None, outputs: list[Any] | None = None
) -> dict[str, Any]:
    args: dict[str, Any] = {"op_name": op}
    if inputs is not None:
        args |= {"input_type_shape": inputs, "output_type_shape": outputs}
    return {"cat": "Node", "name": f"{node}_kernel_time", "ts": ts, "dur": dur, "args": args}


def _fence(node: str, op: str, ts: int) -> dict[str, Any]:
    return {"cat": "Node", "name": f"{node}_fence_before", "ts": ts, "dur": 7, "args": {"op_name": op}}


def _session(name: str, ts: int, dur: int) -> dict[str, Any]:
    return {"cat": "Session", "name": name, "ts": ts, "dur": dur, "args": {}}


# As ONNX Runtime writes it (microseconds): loading, a warm-up run, then the profiled run, each run's own
# ``model_run`` event written after its nodes.
PROFILE = [
    _session("model_loading_uri", 0, 500),
    _session("session_initialization", 500, 100),
    _kernel("mm0", "MatMul", 1_000, 9_000),  # warm-up: slow, must not count
    _kernel("t0", "Transpose", 10_000, 9_000),
    _session("SequentialExecutor::Execute", 1_000, 18_000),
    _session("model_run", 990, 18_100),
    _fence("mm0", "MatMul", 20_000),
    _kernel("mm0", "MatMul", 20_001, 3_000),
    _kernel("mm1", "MatMul", 23_001, 1_000),
    _kernel("c0", "Conv", 24_001, 500),
    _kernel("t0", "Transpose", 24_501, 700, [{"float": [1, 256, 1000]}], [{"float": [1, 1000, 256]}]),
    _kernel("r0", "Reshape", 25_200, 1, [{"float": [1, 1000, 256]}, {"int64": [2]}], [{"float": [1000, 256]}]),
    _kernel("a0", "Add", 25_201, 300, [{"float": [1000, 256]}, {"float": [256]}], [{"float": [1000, 256]}]),
    _kernel("q0", "QLinearAdd", 25_501, 100),  # quantized, but elementwise: not FLOP-class
    _session("SequentialExecutor::Execute", 20_000, 5_700),
    _session("model_run", 19_990, 6_000),
]


def test_the_parser_counts_the_profiled_run_only() -> None:
    breakdown = parse_profile(PROFILE)
    ops = {op.op_type: op for op in breakdown.operators}
    assert [op.op_type for op in breakdown.operators] == [
        "MatMul", "Transpose", "Conv", "Add", "QLinearAdd", "Reshape"
    ]  # fmt: skip
    assert (ops["MatMul"].ms, ops["MatMul"].count) == (pytest.approx(4.0), 2)
    assert (ops["Transpose"].ms, ops["Transpose"].count) == (pytest.approx(0.7), 1)
    assert [op.flop_class for op in breakdown.operators] == [True, False, True, False, False, False]
    assert breakdown.flop_class_ms == pytest.approx(4.5)
    assert breakdown.other_ms == pytest.approx(1.101)
    assert breakdown.kernel_ms == pytest.approx(5.601)
    assert breakdown.run_ms == pytest.approx(6.0)
    # Bytes moved: the transpose reads and writes 256,000 floats, the add two tensors and a bias; a reshape is a view.
    assert ops["Transpose"].bytes == 2 * 256_000 * 4
    assert ops["Add"].bytes == (2 * 256_000 + 256) * 4
    assert ops["Reshape"].bytes == 0 and ops["MatMul"].bytes == 0  # no shapes in those events
    assert breakdown.other_bytes == ops["Transpose"].bytes + ops["Add"].bytes
    as_dict = breakdown.to_dict()
    assert as_dict["ops"][0] == {
        "op_type": "MatMul", "ms": pytest.approx(4.0), "count": 2, "bytes": 0, "flop_class": True
    }  # fmt: skip


def test_a_profile_without_a_run_is_refused() -> None:
    with pytest.raises(ProfileFailed, match="model_run"):
        parse_profile([e for e in PROFILE if e["name"] != "model_run"])


def _profile(ops: list[tuple[str, float, int]], wall_ms: float) -> dict[str, Any]:
    rows = [{"op_type": op, "ms": ms, "count": n, "flop_class": op in ("MatMul", "Conv")} for op, ms, n in ops]
    flop = sum(r["ms"] for r in rows if r["flop_class"])
    total = sum(r["ms"] for r in rows)
    return {
        "variant": "fp32",
        "graph": "vision_encoder.onnx",
        "image_size": [768, 768],
        "wall_ms": wall_ms,
        "run_ms": wall_ms,
        "kernel_ms": total,
        "flop_class_ms": flop,
        "other_ms": total - flop,
        "ops": rows,
    }


def test_figures_in_units_of_the_floor_and_the_target_note() -> None:
    profile = _profile([("MatMul", 3_000.0, 10), ("Transpose", 600.0, 20), ("Conv", 300.0, 4)], wall_ms=4_000.0)
    floor = summary.vision_against_floor(profile, floor_s=3.0)
    assert floor == {
        "floor_ms": pytest.approx(3_000.0),
        "flop_class_x": pytest.approx(1.1),
        "other_x": pytest.approx(0.2),
        "kernel_x": pytest.approx(1.3),
        "wall_x": pytest.approx(4 / 3),
    }
    job = Job(20, 1)
    contenders = {
        "engine-fp32": {
            "kind": "engine",
            "variant": "fp32",
            "summary": {job.key: {"ratio_to_reference": {}, "stages_s": {"vision_encoder": 4.0}}},
        }
    }
    floors = {job.key: summary.Floors(flops={}, compute_s={"vision_encoder": 3.0}, decode_bandwidth_s={})}

    def vision_note(vision_profile: dict[str, Any] | None) -> str:
        found = summary.targets(contenders, floors, job, None, vision_profile)
        return next(t.note for t in found if t.name.startswith("vision encoder"))

    note = vision_note({**profile, "floor": floor})
    assert "FLOP-class kernels 1.10x the floor" in note and "other ops 0.20x" in note and "at best 1.10x" in note
    # With the read bandwidth: 8 GB moved at 40 GB/s is a 200 ms floor for the other ops.
    moving = {**profile, "other_bytes": 8_000_000_000}
    at_bandwidth = summary.vision_against_floor(moving, floor_s=3.0, read_gbps=40.0)
    assert at_bandwidth["other_floor_ms"] == pytest.approx(200.0)
    assert at_bandwidth["best_x"] == pytest.approx((3_300.0 + 200.0) / 3_000.0)
    note = vision_note({**moving, "floor": at_bandwidth})
    assert note.endswith(", 1.17x with them at their own bandwidth floor (8.0 GB moved: 200 ms)")
    assert vision_note(None) == "engine-fp32, fp32 floor"  # the configuration and its floor, nothing profiled
    assert "failed" in vision_note({"variant": "fp32", "error": "it broke"})


def test_the_report_section_shows_the_top_operators_and_the_sentence() -> None:
    ops = [(f"Op{i}", 100.0 - i, 1) for i in range(10)] + [("MatMul", 900.0, 40), ("Conv", 1.0, 2)]
    ops.sort(key=lambda o: -o[1])
    profile = {**_profile(ops, wall_ms=2_000.0), "other_bytes": 4_000_000_000}
    profile["floor"] = summary.vision_against_floor(profile, floor_s=0.5, read_gbps=40.0)
    results = {
        "date": "2026-01-01T000000",
        "machine": {"cpu": "cpu", "cores": 2, "onnxruntime": "1", "load_average_start": [0.0]},
        "model": {"arch": "tiny", "model_dir": "m", "variants": ["fp32", "int8"]},
        "vision_profile": {"fp32": profile, "int8": {"variant": "int8", "error": "it broke"}},
    }
    text = report.markdown(results, Job(20, 1))
    section = text.split("## Vision encoder by operator", 1)[1]
    assert "| MatMul | 900.0 | " in section and "| 40 | FLOP |" in section
    assert "| Op8 |" in section and "| Op9 |" not in section
    assert "| 2 more types | 92.0 | " in section and "| both |" in section  # Op9 and Conv
    assert (
        "FLOP-class kernels 901.0 ms = 1.80x the compute floor; other ops 955.0 ms = 1.91x the floor; "
        "so the stage is at best 1.80x the floor even if every other op cost nothing." in section
    )
    assert (
        "The other ops read and write 4.0 GB (their tensors' shapes in the profile), 100.0 ms at the measured read "
        "bandwidth (tensors that stay in cache move faster): with them at that floor and the FLOP-class kernels as "
        "measured, 2.00x the compute floor." in section
    )
    assert "### int8\n\nNot profiled: it broke" in section
    assert "## Vision encoder by operator" not in report.markdown({**results, "vision_profile": {}}, Job(20, 1))


def test_fp32_and_int8_are_profiled_where_the_run_has_them() -> None:
    everything = ("fp32", "int8", "q4")
    assert profiled_variants(from_args([]), everything) == ["fp32", "int8"]
    assert profiled_variants(from_args(["--variants", "int8,q4"]), everything) == ["int8"]
    assert profiled_variants(from_args([]), ("fp32",)) == ["fp32"]
    assert from_args([]).vision_profile and not from_args(["--no-profile"]).vision_profile


def test_a_real_profile_of_the_tiny_vision_encoder(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the child writes its profile
    profile = profile_in_child(tiny_model_dir, "fp32", tmp_path / "fp32.log", timeout_s=300)
    left = [path.name for path in scratch.rglob("*")]
    assert not [name for name in left if "vision" in name or name.endswith(".json")], left  # profile deleted
    assert profile["graph"] == "vision_encoder.onnx" and profile["image_size"] == [768, 768]
    ops = {op["op_type"]: op for op in profile["ops"]}
    assert "MatMul" in ops and ops["MatMul"]["flop_class"] and ops["MatMul"]["count"] > 0
    assert not ops["Transpose"]["flop_class"]
    assert sum(op["ms"] for op in profile["ops"]) == pytest.approx(profile["kernel_ms"])
    assert profile["flop_class_ms"] + profile["other_ms"] == pytest.approx(profile["kernel_ms"])
    assert profile["flop_class_ms"] > 0 and profile["other_ms"] > 0
    assert profile["kernel_ms"] <= profile["run_ms"] * 1.001  # one sequential run's kernels lie inside its span
    assert profile["peak_rss_bytes"] > 0
    # The run's activations hold at least the first stage's window-attention scores at once: 16 x 16 windows of
    # 12 x 12 tokens, 2 heads (the tiny config), float32.
    scores = 256 * 2 * 144 * 144 * 4
    assert scores < profile["activation_peak_bytes"] < 1024**3


def test_a_graph_that_cannot_be_opened_fails_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(ProfileFailed, match=r"preprocessor_config\.json"):
        profile_in_child(tmp_path / "no-such-model", "fp32", tmp_path / "fp32.log", timeout_s=120)
