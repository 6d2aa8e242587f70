"""``python -m bench --quick`` end to end on the tiny model: every contender, the floors, the vision profile and the
HTTP server run, and the JSON, markdown and PNG are written with the figures the report promises. No timing is
asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ray_row

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tiny_checkpoint: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-results")
    command = [
        sys.executable, "-m", "bench", "--quick",
        "--checkpoint", str(tiny_checkpoint), "--model-dir", str(tiny_model_dir), "--out", str(out),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "## Targets" in completed.stdout  # the table is printed
    return out


def _one(folder: Path, suffix: str) -> Path:
    found = list(folder.glob(f"*.{suffix}"))
    assert len(found) == 1, found
    return found[0]


def test_results_json_holds_every_section(quick_run: Path) -> None:
    results = json.loads(_one(quick_run, "json").read_text())
    sections = {"date", "settings", "machine", "model", "rates", "contenders", "floors", "server", "targets"}
    assert sections <= set(results)
    assert results["rates"]["ort_matmul_gflops"] > 0 and results["rates"]["memory_read_gbps"] > 0

    cpu = results["machine"]["cpu_features"]
    assert cpu["model"] and results["machine"]["cpu"] == cpu["model"]
    by_precision = results["rates"]["matmul_rate_by_precision"]
    assert by_precision["fp32"] > 0 and by_precision["int8"] > 0  # ONNX Runtime MatMulInteger runs everywhere
    assert (by_precision["bf16"] is not None) == bool(cpu["bf16_unit"])

    contenders = results["contenders"]
    engines = {name for name, c in contenders.items() if c["kind"] == "engine" and not c["skipped"]}
    assert {"pytorch-eager", "engine-openvino-f32-fp32"} <= set(contenders) and len(engines) >= 3
    assert {contenders[name]["variant"] for name in engines} >= {"fp32", "int8"}
    bf16 = {name for name in contenders if name.endswith("bf16") or "-bf16-" in name}
    assert {"pytorch-eager-bf16", "engine-openvino-bf16-fp32"} <= bf16
    assert results["best_peer"]["name"] in {"pytorch-eager", "pytorch-eager-bf16"}
    jobs = {"tokens8_beams1", "tokens16_beams1", "tokens8_beams3", "tokens16_beams3"}
    for name, contender in contenders.items():
        if name in bf16 and not cpu["bf16_unit"]:  # emulated here: left out, and the run says why
            assert "no bf16 unit" in contender["skipped"], contender
            continue
        if name == "engine-auto-fastest" and contender["skipped"]:  # it chose a configuration the run has
            chosen = contender["skipped"].rsplit("measured as ", 1)[-1]
            assert chosen in contenders and contenders[chosen]["skipped"] is None, contender
            continue
        assert contender["skipped"] is None and not contender["errors"], (name, contender)
        assert set(contender["summary"]) == jobs
        assert contender["peak_rss_bytes"] > 0
        for key, entry in contender["summary"].items():
            if contender["kind"] == "openvino":  # the vision encoder graph alone
                assert entry["end_to_end_s"] is None and entry["stages_s"]["vision_encoder"] > 0
                continue
            assert entry["new_tokens"] == int(key.removeprefix("tokens").split("_")[0])  # EOS was ignored
            assert set(entry["stages_s"]) >= {"vision_encoder", "text_encoder", "first_decode", "per_token_decode"}
            if name != "pytorch-eager":
                assert entry["ratio_to_reference"]["end_to_end"] > 0
            if name != results["best_peer"]["name"]:
                assert entry["ratio_to_best_peer"]["end_to_end"] > 0

    floors = results["floors"]["tokens8_beams1"]
    assert set(floors["compute_s"]) == {"vision_encoder", "text_encoder", "first_decode", "per_token_decode"}
    assert set(floors["decode_bandwidth_s"]) >= {"fp32", "int8"}

    server = results["server"]
    assert [level["concurrency"] for level in server["levels"]] == [1, 4, 8, 16]
    for level in server["levels"]:
        assert level["errors"] == 0 and level["ok"] >= level["concurrency"]
        assert level["latency_s"]["p95"] > 0 and level["throughput_tokens_per_s"] > 0
        assert sum(level["batch_sizes"].values()) == level["ok"]  # every request's batch was seen in /metrics
        assert 0 < level["rss"]["peak_bytes"] <= server["rss"]["peak_bytes"], level["rss"]
        assert level["kv_cache"]["beams"] == 3 and level["kv_cache"]["requests"] == level["batch_size_max"]
        assert level["kv_cache"]["bytes"] > 0
    assert server["rss"]["peak_bytes"] > 0
    peak = next(target for target in results["targets"] if target["name"].startswith("peak server RSS"))
    assert peak["note"].startswith("one image's vision activations") and "1 client: peak" in peak["note"]
    assert "KV cache of the largest batch" in peak["note"]
    assert "requests" in server["overhead"]

    profiles = results["vision_profile"]
    assert set(profiles) == {"fp32", "int8"}
    for variant, profile in profiles.items():
        assert "error" not in profile, profile
        assert profile["graph"] == ("vision_encoder.onnx" if variant == "fp32" else "vision_encoder_int8.onnx")
        assert profile["flop_class_ms"] > 0 and profile["other_ms"] > 0
        assert profile["floor"]["flop_class_x"] > 0 and profile["floor"]["other_x"] > 0

    ray = results["ray"]
    if ray_row.ray_installed():
        assert "error" not in ray, ray
        assert ray["overhead_p50_ms"]["direct"] > 0 and ray["overhead_p50_ms"]["ray"] > 0
        assert ray["throughput_tokens_per_s"]["1"] > 0 and ray["throughput_tokens_per_s"]["2"] > 0
        for run in ("ray_1", "ray_2"):
            level = ray["runs"][run]["level"]
            assert level["errors"] == 0 and level["ok"] >= ray["clients"], level
    else:
        assert "ray extra" in ray["skipped"]

    names = [target["name"] for target in results["targets"]]
    assert len(names) == 8
    served = next(target for target in results["targets"] if target["name"].startswith("served over HTTP"))
    assert served["measured"] > 0 and served["note"].startswith(server["contender"]), served
    vision = next(target for target in results["targets"] if target["name"].startswith("vision encoder"))
    assert vision["note"].split(", ")[0] in contenders  # the fastest vision configuration
    if vision["note"].split(", ")[1].startswith("fp32"):  # the operator profile is quoted against the fp32 floor
        assert "the engine's fp32 profiled run: FLOP-class kernels" in vision["note"]
    assert all(target["met"] in (True, False, None) for target in results["targets"])


def test_markdown_and_plot_are_written(quick_run: Path) -> None:
    markdown = _one(quick_run, "md").read_text()
    headings = ("## Machine", "## Targets", "## Side by side", "## Floors", "## Vision encoder by operator")
    headings += ("## HTTP server", "Best peer: **pytorch-eager")
    headings += ("## Ray Serve",)
    for heading in headings:
        assert heading in markdown
    assert "engine-onnxruntime-f32-int8" in markdown and "engine-openvino-f32-fp32" in markdown
    assert "| peak RSS MiB | x weights | KV cache MiB |" in markdown
    assert _one(quick_run, "png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
