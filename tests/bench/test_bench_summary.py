"""Target notes from results whose figures are known: the end-to-end ratio without the vision encoder's
memory-bound ops, and the peak-RSS target taken apart (1-client peak, 8-client peak, the KV cache of the largest
batch and the rest) with the server table's memory columns."""

from __future__ import annotations

from typing import Any

from bench import report, summary
from bench.memory import HWM_SOURCE
from bench.workload import Job

MiB = 2**20
WEIGHTS = 3000 * MiB


def _level(clients: int, peak_mib: int, kv_mib: int | None = None, source: str = HWM_SOURCE) -> dict[str, Any]:
    level: dict[str, Any] = {
        "concurrency": clients,
        "requests": 2 * clients,
        "ok": 2 * clients,
        "throughput_rps": 1.0,
        "throughput_tokens_per_s": 128.0,
        "completion_tokens_mean": 128,
        "latency_s": {"p50": 1.0, "p95": 2.0, "p99": 2.0},
        "batch_sizes": {str(clients): 2},
        "rss": {"peak_bytes": peak_mib * MiB, "peak_over_weights": peak_mib * MiB / WEIGHTS, "source": source},
    }
    if kv_mib is not None:
        level["kv_cache"] = {
            "requests": clients,
            "beams": 3,
            "rows": 3 * clients,
            "encoder_tokens": 586,
            "self_tokens": 128,
            "cross_rows": "request",
            "itemsize": 4,
            "cross_bytes": (kv_mib - 288) * MiB,
            "self_bytes": 288 * MiB,
            "bytes": kv_mib * MiB,
        }
    return level


def _server(*levels: dict[str, Any]) -> dict[str, Any]:
    peak = max(level["rss"]["peak_bytes"] for level in levels)
    return {
        "variant": "fp32",
        "max_tokens": 128,
        "ready_s": 30.0,
        "levels": list(levels),
        "scaling": {str(level["concurrency"]): 1.0 for level in levels},
        "overhead": {},
        "rss": {"peak_bytes": peak, "weight_bytes": WEIGHTS, "peak_over_weights": peak / WEIGHTS},
    }


def test_the_note_takes_the_eight_client_peak_apart() -> None:
    server = _server(_level(1, 3300, 60), _level(4, 4200, 400), _level(8, 6000, 728))
    assert summary.rss_note(server) == (
        "1 client: peak 3,300 MiB = 1.10x weights; 8 clients: peak 6,000 MiB = 2.00x weights; KV cache of the "
        "largest batch (8 requests x 3 beams, 128 tokens, 586 encoder tokens, cross-attention once per request) "
        "728 MiB (cross 440, self 288); peak less KV 5,272 MiB = 1.76x weights"
    )
    target = next(t for t in summary.targets({}, {}, Job(20, 1), server) if t.name.startswith("peak server RSS"))
    assert target.measured == 2.0  # the run's peak, which is the 8-client one here
    assert target.note == summary.rss_note(server)
    profiled = summary.rss_note(server, {"activation_peak_bytes": 810 * MiB})
    assert profiled.startswith("one image's vision activations 810 MiB = 0.27x weights (profiled run); 1 client:")


def test_the_note_says_which_peaks_were_polled_and_skips_what_was_not_run() -> None:
    server = _server(_level(1, 3300, source="polled every 0.2 s (writing 5 failed)"), _level(16, 7000))
    assert summary.rss_note(server) == (
        "1 client: peak 3,300 MiB = 1.10x weights; peaks at 1 client(s) polled, not VmHWM (see the server section)"
    )


def test_the_server_table_has_each_levels_peak_and_kv_cache() -> None:
    results = {
        "date": "d",
        "machine": {"cpu": "cpu", "cores": 2, "onnxruntime": "1", "load_average_start": [0.0]},
        "model": {"arch": "large", "model_dir": "m", "variants": ["fp32"]},
        "server": _server(_level(1, 3300, 60), _level(8, 6000, 728)),
    }
    lines = report.markdown(results, Job(20, 1)).splitlines()
    header = next(line for line in lines if line.startswith("| clients"))
    assert header.endswith("| peak RSS MiB | x weights | KV cache MiB | (peak - KV) x weights |")
    eight = next(line for line in lines if line.startswith("| 8 |"))
    assert eight.endswith("| 6,000 | 2.00x | 728 | 1.76x |")
    method = next(line for line in lines if line.startswith("Peak RSS per level"))
    assert method.startswith(f"Peak RSS per level: {HWM_SOURCE}. KV cache: counted from config.json")
    assert "once per request, as the decoder graph declares" in method


def test_the_end_to_end_note_takes_the_vision_encoders_memory_bound_ops_out() -> None:
    note = summary.end_to_end_note({"end_to_end_s": 5.6}, {"end_to_end_s": 11.2}, {"other_ms": 700.0})
    assert note == "the vision encoder's memory-bound ops take 700 ms (profiled run); were they free, 0.44x"
    at_floor = {"other_ms": 700.0, "floor": {"other_floor_ms": 476.0}}
    assert summary.end_to_end_note({"end_to_end_s": 5.6}, {"end_to_end_s": 11.2}, at_floor) == (
        "the vision encoder's memory-bound ops take 700 ms (profiled run); at their bandwidth floor (476 ms) 0.48x; "
        "were they free, 0.44x"
    )
    assert summary.end_to_end_note({"end_to_end_s": 5.6}, {"end_to_end_s": 11.2}, None) == ""
    assert summary.end_to_end_note(None, {"end_to_end_s": 11.2}, {"other_ms": 700.0}) == ""
