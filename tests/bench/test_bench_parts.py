"""The benchmark's bookkeeping: timing headers, percentiles, /metrics deltas, stage mapping, ratios, weight bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from waiting import wait_until

from bench import summary
from bench.contenders import ContenderSpec
from bench.engine_runner import MissingTiming, stages_from_timings
from bench.measurement import Measurement
from bench.prometheus import histograms
from bench.server_load import model_seconds, percentile, server_timing
from bench.side_by_side import ContenderOutcome
from bench.weights import initializer_bytes
from bench.workload import Job

METRICS_BEFORE = """# HELP florence_batch_size Requests that shared a decoder batch
# TYPE florence_batch_size histogram
florence_batch_size_bucket{le="1.0",model="m"} 3.0
florence_batch_size_bucket{le="2.0",model="m"} 3.0
florence_batch_size_bucket{le="4.0",model="m"} 3.0
florence_batch_size_bucket{le="+Inf",model="m"} 3.0
florence_batch_size_count{model="m"} 3.0
florence_batch_size_sum{model="m"} 3.0
"""
METRICS_AFTER = (
    METRICS_BEFORE.replace('le="2.0",model="m"} 3.0', 'le="2.0",model="m"} 5.0')
    .replace('le="4.0",model="m"} 3.0', 'le="4.0",model="m"} 9.0')
    .replace('le="+Inf",model="m"} 3.0', 'le="+Inf",model="m"} 9.0')
)
METRICS_AFTER = METRICS_AFTER.replace('_count{model="m"} 3.0', '_count{model="m"} 9.0').replace(
    '_sum{model="m"} 3.0', '_sum{model="m"} 31.0'
)


def test_model_seconds_from_server_timing() -> None:
    # the engine's stages, as the server sends them: preprocess and queue are not model time
    header = "queue;dur=4.0, preprocess;dur=9.0, vision;dur=100, encoder;dur=20, decode;dur=30.5, model;dur=159.5"
    entries = server_timing(header)
    assert entries["queue"] == pytest.approx(0.004)
    assert model_seconds(entries) == pytest.approx(0.1505)
    assert model_seconds(server_timing('total;dur=250, model;dur=200.5;desc="all"')) == pytest.approx(0.2005)
    assert model_seconds(server_timing("http;dur=5")) is None
    assert model_seconds(server_timing(None)) is None


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_batch_histogram_change_over_a_level() -> None:
    before = histograms(METRICS_BEFORE)["florence_batch_size"]
    after = histograms(METRICS_AFTER)["florence_batch_size"]
    change = after.minus(before)
    assert change.counts() == {"2": 2, "4": 4}
    assert change.count == 6
    assert change.mean == pytest.approx(28 / 6)


def test_engine_timings_map_to_stages() -> None:
    timings = {"preprocess": 0.01, "vision": 1.0, "encoder": 0.2, "first_decode": 0.05, "decode_per_token": 0.02}
    assert stages_from_timings(timings) == {
        "preprocess": 0.01,
        "vision_encoder": 1.0,
        "text_encoder": 0.2,
        "first_decode": 0.05,
        "per_token_decode": 0.02,
    }
    with pytest.raises(MissingTiming, match="vision_encoder"):
        stages_from_timings({"encoder": 0.2, "first_decode": 0.05, "decode_per_token": 0.02})


def _outcome(name: str, end_to_end: list[float | None]) -> ContenderOutcome:
    outcome = ContenderOutcome(ContenderSpec(name, "engine", Path(".")))
    stages = {"vision_encoder": 1.0, "per_token_decode": 0.01}
    outcome.runs[Job(20, 1).key] = [Measurement(stages, e, 20, 590) if e is not None else None for e in end_to_end]
    return outcome


def test_ratios_are_taken_within_rounds() -> None:
    reference = _outcome(summary.REFERENCE, [10.0, 20.0, 10.0])
    ours = _outcome("engine-fp32", [4.0, 6.0, None])  # the third round failed: it pairs with nothing
    entry = summary.summarise_contender(ours, reference)[Job(20, 1).key]
    assert entry["ratio_to_reference"]["end_to_end_rounds"] == [0.4, 0.3]
    assert entry["ratio_to_reference"]["end_to_end"] == pytest.approx(0.35)
    assert entry["end_to_end_s"] == 5.0
    assert entry["rounds"] == 2


def test_targets_say_met_and_not_met() -> None:
    job = Job(20, 1)
    contenders = {
        "engine-fp32": {
            "kind": "engine",
            "variant": "fp32",
            "summary": {job.key: {"ratio_to_reference": {"end_to_end": 0.4}, "stages_s": {"vision_encoder": 2.0}}},
        },
        "engine-int8": {
            "kind": "engine",
            "variant": "int8",
            "summary": {job.key: {"ratio_to_reference": {"end_to_end": 0.6}, "stages_s": {}}},
        },
    }
    floor = summary.Floors(flops={}, compute_s={"vision_encoder": 1.0}, decode_bandwidth_s={"fp32": 0.01})
    found = {t.name.split(":")[-1].strip(): t for t in summary.targets(contenders, {job.key: floor}, job, None)}
    assert found["engine fp32 on ONNX Runtime / PyTorch fp32"].met is True
    best = found["best engine configuration / best PyTorch (pytorch-eager)"]
    assert (best.measured, best.met, best.note) == (0.4, True, "engine-fp32 / pytorch-eager")
    vision = found["vision encoder, best configuration / its floor at that precision"]
    assert (vision.measured, vision.met, vision.note) == (2.0, False, "engine-fp32, fp32 floor")
    assert found["per-token decode, best configuration / bandwidth floor of the weights it reads"].met is None


def test_weight_bytes_count_subgraphs_once(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper, save

    shared = numpy_helper.from_array(np.zeros((4, 8), np.float32), "w")  # 128 bytes, used by both branches
    branch_only = numpy_helper.from_array(np.zeros(10, np.int8), "b")  # 10 bytes
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    then = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "then", [], [out])
    other = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "else", [], [out], initializer=[branch_only]
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [1])],
        [out],
        initializer=[shared],
    )
    path = tmp_path / "g.onnx"
    save(helper.make_model(graph), str(path))
    assert initializer_bytes(path) == 128 + 10


def test_memory_guard_kills_the_armed_process_only() -> None:
    import subprocess
    import sys

    import psutil

    from bench.memory import MemoryWatch

    everything = psutil.virtual_memory().total * 2  # a floor no machine has available: the guard must act
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    busy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    idle_watch = MemoryWatch(psutil.Process(idle.pid), everything, armed=False, interval_s=0.05)
    busy_watch = MemoryWatch(psutil.Process(busy.pid), everything, interval_s=0.05)
    try:
        assert busy.wait(timeout=10) != 0
        assert busy_watch.killed_because and "available" in busy_watch.killed_because
        wait_until(lambda: idle_watch.polled_peak, "the unarmed watch's first poll")  # where an armed one kills
        assert idle_watch.stop() > 0  # its peak RSS was seen; stopped, it polls no more
        assert idle.poll() is None and idle_watch.killed_because is None
    finally:
        busy_watch.stop()
        idle.kill()
        idle.wait()


def test_a_contender_that_cannot_load_is_skipped_with_its_reason(tmp_path: Path) -> None:
    from bench.side_by_side import run_rounds

    missing = ContenderSpec("engine-fp32", "engine", tmp_path / "no-such-model")
    [outcome] = run_rounds(
        [missing], [Job(2, 1)], 1, tmp_path / "logs", load_timeout_s=60, job_timeout_s=60, progress=lambda _: None
    )
    assert outcome.skipped is not None and "no-such-model" in outcome.skipped
    assert outcome.runs == {} and outcome.peak_rss_bytes is None
