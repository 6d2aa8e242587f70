"""The markdown report: targets first, then the side-by-side table, the floors, the vision encoder by operator,
the server and the method."""

from __future__ import annotations

from typing import Any

from bench import ray_row
from bench.measurement import STAGES
from bench.summary import REFERENCE, describe, mib_text, precision_of
from bench.workload import IMAGE_SIZE, TASK, Job

STAGE_TITLES = {
    "preprocess": "preproc",
    "vision_encoder": "vision",
    "text_encoder": "text enc",
    "first_decode": "1st step",
    "per_token_decode": "per token",
}


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{1000 * seconds:,.1f}"


def _x(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _targets(results: dict[str, Any]) -> list[str]:
    rows = []
    for t in results.get("targets", []):
        measured = t["measured"]
        value = "–" if measured is None else (f"{measured:.1f}" if "ms" in t["goal"] else f"{measured:.2f}x")
        met = {True: "met", False: "not met", None: "not measured"}[t["met"]]
        rows.append([t["name"], t["goal"], value, met, t.get("note") or ""])
    return ["## Targets (printed, not asserted)", "", *_table(["target", "goal", "measured", "", "note"], rows)]


def _side_by_side(results: dict[str, Any]) -> list[str]:
    contenders = results.get("contenders", {})
    if not contenders:
        return []
    lines = [
        "## Side by side",
        "",
        f"Same image ({IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG), task `{TASK}`, EOS ignored. Medians over "
        f"{results['settings']['rounds']} alternating round(s); `x peer` is the median of per-round ratios to the "
        f"best peer ({_peer(results)}), `x fp32` to {REFERENCE} (PyTorch fp32). `openvino-vision-*` run the vision "
        "encoder graph alone (no end to end). Stage times in ms.",
        "",
    ]
    peer = _peer(results)
    header = [
        "job",
        "contender",
        "computes in",
        "end to end",
        "x peer",
        "x fp32",
        *(STAGE_TITLES[s] for s in STAGES),
        "peak RSS MiB",
    ]
    rows = []
    job_keys = [key for c in contenders.values() for key in c.get("summary", {})]
    for key in dict.fromkeys(job_keys):
        for name, contender in contenders.items():
            entry = contender.get("summary", {}).get(key)
            if entry is None:
                continue
            ratio = entry.get("ratio_to_reference", {}).get("end_to_end") if name != REFERENCE else 1.0
            to_peer = entry.get("ratio_to_best_peer", {}).get("end_to_end") if name != peer else 1.0
            stages = entry["stages_s"]
            rows.append(
                [
                    key,
                    name,
                    precision_of(name, contender),
                    _ms(entry["end_to_end_s"]),
                    _x(to_peer if entry["end_to_end_s"] else None),
                    _x(ratio if entry["end_to_end_s"] else None),
                    *(_ms(stages.get(s)) for s in STAGES),
                    mib_text(contender.get("peak_rss_bytes")),
                ]
            )
    lines += _table(header, rows)
    loaded = [
        f"{name} ({c['ready'].get('device', '?')}, loaded in {c['ready'].get('load_s', 0):.1f} s)"
        for name, c in contenders.items()
        if c.get("ready")
    ]
    lines += ["", "Contenders: " + "; ".join(loaded) + "."]
    problems = [
        f"- {name}: {contender['skipped'] or '; '.join(contender['errors'])}"
        for name, contender in contenders.items()
        if contender.get("skipped") or contender.get("errors")
    ]
    if problems:
        lines += ["", "Left out on this machine, or failed:", *problems]
    return lines


def _peer(results: dict[str, Any]) -> str:
    return (results.get("best_peer") or {}).get("name") or REFERENCE


def _machine(results: dict[str, Any]) -> list[str]:
    """The CPU, its features, the matmul rate at each precision and the best peer: what decides the lineup."""
    m = results["machine"]
    features = m.get("cpu_features") or {}
    rates = results.get("rates") or {}
    lines = ["## Machine", ""]
    present = [name for name, has in (features.get("features") or {}).items() if has]
    known = features.get("features") is not None
    lines.append(
        f"CPU: {m['cpu']}, {m['cores']} cores; features: "
        + ((", ".join(present) or "none of those looked for") if known else f"unknown ({features.get('source')})")
        + f". bf16 unit (AMX or AVX-512 BF16): {_yes(features.get('bf16_unit'))}; int8 dot products (AMX, VNNI): "
        f"{_yes(features.get('int8_dot_product'))}."
    )
    by_precision = rates.get("matmul_rate_by_precision") or {}
    measured = [f"{p} {rate:,.0f}" for p, rate in by_precision.items() if rate]
    if measured:
        lines += ["", "Matmul rate by precision (GFLOP/s; GOP/s for int8): " + "; ".join(measured) + "."]
    skipped = rates.get("skipped") or {}
    if skipped:
        lines += ["", "Probes not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "."]
    peer = results.get("best_peer") or {}
    if peer.get("name"):
        timed = ", ".join(f"{n} {_ms(s)} ms" for n, s in (peer.get("end_to_end_s") or {}).items() if s)
        lines += ["", f"Best peer: **{peer['name']}**, {peer.get('rule')} ({timed})."]
    return lines


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def _floors(results: dict[str, Any], headline: Job) -> list[str]:
    floors = results.get("floors", {}).get(headline.key)
    if not floors:
        return []
    rates = results["rates"]
    contenders = results.get("contenders", {})
    lines = [
        f"## Floors ({headline.key})",
        "",
        f"Matmul {rates['matmul_gflops']:.0f} GFLOP/s (ONNX Runtime fp32 {rates['ort_matmul_gflops']:.0f}, numpy "
        f"{rates['numpy_matmul_gflops']:.0f}); memory read {rates['memory_read_gbps']:.1f} GB/s (numpy "
        f"{rates['numpy_memory_read_gbps']:.1f}, ONNX Runtime {rates['ort_memory_read_gbps']:.1f}). "
        "Each cell: measured / the floor of the precision the contender computes in.",
        "",
    ]
    names = [n for n in contenders if contenders[n].get("summary", {}).get(headline.key)]
    by_precision = {"fp32": floors["compute_s"], **(floors.get("compute_s_by_precision") or {})}
    precisions = [p for p in ("fp32", "bf16", "int8", "fp16") if p in by_precision]
    header = ["stage", "GFLOP", *(f"{p} floor ms" for p in precisions), *names]
    rows = []
    for stage in ("vision_encoder", "text_encoder", "first_decode", "per_token_decode"):
        cells = []
        for name in names:
            measured = contenders[name]["summary"][headline.key]["stages_s"].get(stage)
            floor_s = by_precision.get(precision_of(name, contenders[name]), {}).get(stage)
            cells.append(_x(measured / floor_s) if measured and floor_s else "–")
        floor_cells = [_ms(by_precision[p][stage]) for p in precisions]
        rows.append([stage, f"{floors['flops'][stage] / 1e9:,.2f}", *floor_cells, *cells])
    lines += _table(header, rows)
    bandwidth = floors["decode_bandwidth_s"]
    decode_rows = []
    for name in names:
        _, variant, _, _ = describe(name, contenders[name])
        halved = precision_of(name, contenders[name]) == "bf16" and variant == "fp32"  # held in bf16
        floor_s = bandwidth.get(variant)
        floor_s = floor_s / 2 if floor_s and halved else floor_s
        measured = contenders[name]["summary"][headline.key]["stages_s"].get("per_token_decode")
        if not measured:
            continue
        weight = results["model"]["weight_bytes"].get(variant, {}).get("decoder_model_merged")
        weight = weight // 2 if weight and halved else weight
        decode_rows.append(
            [
                name,
                mib_text(weight),
                _ms(floor_s),
                _ms(measured),
                _x(measured / floor_s if measured and floor_s else None),
            ]
        )
    lines += [
        "",
        "Per-token decode against the bandwidth floor (decoder weight bytes / read bandwidth; fp32 weights run in "
        "bf16 count half):",
        "",
        *_table(["contender", "decoder weights MiB", "floor ms", "measured ms", "ratio"], decode_rows),
    ]
    return lines


TOP_OPERATORS = 10  # rows of the vision profile table; the rest are summed in one row


def _vision_profile(results: dict[str, Any]) -> list[str]:
    profiles = results.get("vision_profile")
    if not profiles:
        return []
    lines = [
        "## Vision encoder by operator",
        "",
        "One run of each variant's vision encoder under ONNX Runtime's profiler, after one warm-up run, in a process "
        "of its own with the engine's session options: kernel time per operator type. FLOP-class kernels are the "
        "matmuls and convolutions the compute floor counts; the other operators (transposes, softmax, bias adds, "
        "normalisation, layout reorders) are bound by memory. The floor is the stage's FLOPs over the best matmul "
        "rate measured in this run, as in the Floors section.",
    ]
    for variant, profile in profiles.items():
        lines += ["", f"### {variant}", ""]
        if "error" in profile:
            lines.append(f"Not profiled: {profile['error']}")
            continue
        lines += _operator_table(profile)
        height, width = profile["image_size"]
        floor = profile.get("floor", {})
        lines += [
            "",
            f"{profile['graph']}, {height}x{width} input: profiled run {_ms(profile['wall_ms'] / 1000)} ms wall "
            f"({_x(floor.get('wall_x'))} the floor of {_ms(floor['floor_ms'] / 1000) if floor else '–'} ms), "
            f"kernels {_ms(profile['kernel_ms'] / 1000)} ms.",
        ]
        if floor:
            lines += [
                "",
                f"FLOP-class kernels {_ms(profile['flop_class_ms'] / 1000)} ms = {_x(floor['flop_class_x'])} the "
                f"compute floor; other ops {_ms(profile['other_ms'] / 1000)} ms = {_x(floor['other_x'])} the floor; "
                f"so the stage is at best {_x(floor['flop_class_x'])} the floor even if every other op cost nothing.",
            ]
            if "best_x" in floor:
                lines += [
                    "",
                    f"The other ops read and write {profile['other_bytes'] / 1e9:,.1f} GB (their tensors' shapes in "
                    f"the profile), {_ms(floor['other_floor_ms'] / 1000)} ms at the measured read bandwidth "
                    "(tensors that stay in cache move faster): with them at that floor and the FLOP-class kernels "
                    f"as measured, {_x(floor['best_x'])} the "
                    "compute floor.",
                ]
    return lines


def _operator_table(profile: dict[str, Any]) -> list[str]:
    kernel_ms = profile["kernel_ms"] or 1.0
    ops = profile["ops"]
    rows = [
        [
            op["op_type"],
            f"{op['ms']:,.1f}",
            f"{100 * op['ms'] / kernel_ms:.1f}%",
            str(op["count"]),
            _class_of([op]),
        ]
        for op in ops[:TOP_OPERATORS]
    ]
    rest = ops[TOP_OPERATORS:]
    if rest:
        rest_ms = sum(op["ms"] for op in rest)
        rows.append(
            [
                f"{len(rest)} more types",
                f"{rest_ms:,.1f}",
                f"{100 * rest_ms / kernel_ms:.1f}%",
                str(sum(op["count"] for op in rest)),
                _class_of(rest),
            ]
        )
    return _table(["operator", "ms", "share", "count", "class"], rows)


def _class_of(ops: list[dict[str, Any]]) -> str:
    classes = {op["flop_class"] for op in ops}
    return "both" if len(classes) > 1 else ("FLOP" if True in classes else "other")


def _server(results: dict[str, Any]) -> list[str]:
    server = results.get("server")
    if not server:
        return []
    lines = [
        f"## HTTP server ({server.get('variant', '?')}, {server.get('max_tokens', '?')}-token requests, the model's "
        "default beams)",
        "",
    ]
    rss = server.get("rss", {})
    if "ready_s" in server:
        lines += [
            f"Ready in {server['ready_s']:.1f} s. Peak RSS over the run {mib_text(rss.get('peak_bytes'))} MiB for "
            f"{mib_text(rss.get('weight_bytes'))} MiB of weights ({_x(rss.get('peak_over_weights'))}).",
            "",
        ]
    rows = []
    for level in server.get("levels", []):
        latency = level["latency_s"]
        rows.append(
            [
                str(level["concurrency"]),
                f"{level['ok']}/{level['requests']}",
                f"{level['throughput_rps'] or 0:.3f}",
                f"{level['throughput_tokens_per_s'] or 0:.1f}",
                f"{level['completion_tokens_mean'] or 0:.0f}",
                _x(server["scaling"].get(str(level["concurrency"]))),
                _ms(latency["p50"]),
                _ms(latency["p95"]),
                _ms(latency["p99"]),
                ", ".join(f"{k}:{v}" for k, v in level["batch_sizes"].items()) or "–",
                *_level_memory(level, rss.get("weight_bytes")),
            ]
        )
    if rows:
        header = ["clients", "ok", "req/s", "tok/s", "tok/req", "x serial", "p50 ms", "p95 ms", "p99 ms"]
        memory = ["peak RSS MiB", "x weights", "KV cache MiB", "(peak - KV) x weights"]
        lines += _table([*header, "batch sizes (le:count)", *memory], rows)
        lines += ["", _memory_method(server)]
    overhead = server.get("overhead") or {}
    if "p50_ms" in overhead:
        lines += [
            "",
            f"Server overhead (max_tokens=1, {overhead['requests']} sequential requests, model time from "
            f"{overhead['model_time_source']}): p50 {overhead['p50_ms']:.1f} ms, p95 {overhead['p95_ms']:.1f} ms"
            + _parts(overhead)
            + ".",
        ]
    elif overhead:
        lines += ["", f"Server overhead: {overhead.get('note') or overhead.get('error')}"]
    errors = [lv["first_error"] for lv in server.get("levels", []) if lv.get("first_error")]
    if errors:
        lines += ["", "First errors: " + "; ".join(errors)]
    if server.get("error"):
        lines += ["", f"The load test stopped early: {server['error']}"]
    return lines


def _level_memory(level: dict[str, Any], weight_bytes: int | None) -> list[str]:
    """Peak RSS of the level, over the weights; the KV cache of its largest batch; the peak less that cache."""
    peak = (level.get("rss") or {}).get("peak_bytes")
    kv = (level.get("kv_cache") or {}).get("bytes")
    rest = peak - kv if peak and kv else None
    return [mib_text(peak), _x(_over(peak, weight_bytes)), mib_text(kv), _x(_over(rest, weight_bytes))]


def _over(count: int | None, weight_bytes: int | None) -> float | None:
    return count / weight_bytes if count and weight_bytes else None


def _memory_method(server: dict[str, Any]) -> str:
    levels = server.get("levels", [])
    sources = dict.fromkeys(lv["rss"]["source"] for lv in levels if lv.get("rss"))
    kv = next((lv["kv_cache"] for lv in levels if lv.get("kv_cache")), None)
    text = "Peak RSS per level: " + ("; ".join(sources) or "not measured") + "."
    if kv:
        text += (
            f" KV cache: counted from config.json (bench/kv_cache.py) at the level's largest batch (the upper bound of "
            f"its /metrics bucket) x {kv['beams']} beams, {kv['encoder_tokens']} encoder tokens, as many "
            f"self-attention positions as tokens generated, {kv['itemsize']}-byte elements; the cross-attention cache "
            f"is held once per {kv['cross_rows']}, as the decoder graph declares."
        )
    else:
        text += " KV cache: " + ((server.get("rss") or {}).get("kv_cache_note") or "not counted") + "."
    return text


def _parts(overhead: dict[str, Any]) -> str:
    parts = [f"{p} p50 {overhead[f'{p}_p50_ms']:.1f} ms" for p in ("preprocess", "queue") if f"{p}_p50_ms" in overhead]
    return f" ({', '.join(parts)}, included)" if parts else ""


def _ray(results: dict[str, Any]) -> list[str]:
    row = results.get("ray")
    if not row:
        return []
    if row.get("skipped"):
        return ["## Ray Serve", "", f"Not run: {row['skipped']}."]
    overhead = row.get("overhead_p50_ms") or {}
    tokens = row.get("throughput_tokens_per_s") or {}

    def number(value: float | None, unit: str = "") -> str:
        return "–" if value is None else f"{value:,.1f}{unit}"

    extra = overhead.get("ray_over_direct")
    ratio = row.get("two_over_one")
    lines = [
        f"## Ray Serve ({row['model_dir']}, {row['max_tokens']}-token requests, {row.get('cpus')} CPUs)",
        "",
        *_table(
            ["measure", "direct", "Ray, 1 replica", "Ray, 2 replicas", "Ray figure", "target"],
            [
                [
                    "server overhead p50 (ms)",
                    number(overhead.get("direct")),
                    number(overhead.get("ray")),
                    "",
                    f"+{number(extra)} ms",
                    f"<= {ray_row.OVERHEAD_TARGET_MS:g} ms: "
                    + ("–" if extra is None else "met" if extra <= ray_row.OVERHEAD_TARGET_MS else "not met"),
                ],
                [
                    f"{row['clients']} clients (tokens/s)",
                    "",
                    number(tokens.get("1")),
                    number(tokens.get("2")),
                    _x(ratio),
                    f">= {ray_row.SCALE_TARGET:g}x where the cores are free: "
                    + ("–" if ratio is None else "met" if ratio >= ray_row.SCALE_TARGET else "not met"),
                ],
            ],
        ),
    ]
    if row.get("error"):
        lines += ["", f"Errors: {row['error']}"]
    return lines


def markdown(results: dict[str, Any], headline: Job) -> str:
    m = results["machine"]
    model = results["model"]
    lines = [
        f"# Benchmark {results['date']}",
        "",
        f"{model['arch']} architecture, random weights ({model['model_dir']}: {', '.join(model['variants'])}); "
        f"{m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}, torch {m.get('torch', '–')}, "
        f"transformers {m.get('transformers', '–')}, openvino {m.get('openvino', '–')}. "
        f"Load average {m['load_average_start'][0]:.2f} at start, "
        f"{m.get('load_average_end', [0])[0]:.2f} at end: absolute times drift on a shared machine, ratios hold. "
        f"Run took {results.get('duration_s', 0) / 60:.1f} min.",
        "",
        *_machine(results),
        "",
        *_targets(results),
        "",
        *_side_by_side(results),
        "",
        *_floors(results, headline),
        "",
        *_vision_profile(results),
        "",
        *_server(results),
        "",
        *_ray(results),
        "",
    ]
    if results.get("floors_method"):
        lines += ["Method: " + results["floors_method"] + ".", ""]
    return "\n".join(lines)
