"""From raw measurements to the figures of the report: medians, side-by-side ratios, floors and targets.

Ratios are taken per round (both sides measured minutes apart on the same machine state) and the median of the
rounds is reported; absolute medians are given beside them for scale, not for comparison across runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.configurations import REFERENCE, compute_precision
from bench.flops import ModelShape, stage_flops, vision_flops
from bench.machine import PRECISIONS, MachineRates
from bench.measurement import STAGES, Measurement
from bench.memory import HWM_SOURCE
from bench.side_by_side import ContenderOutcome
from bench.workload import Job


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise_contender(
    outcome: ContenderOutcome, reference: ContenderOutcome | None, best_peer: ContenderOutcome | None = None
) -> dict[str, Any]:
    """Per job: median end to end and stages, and the median of the per-round ratios to the reference (PyTorch
    fp32) and to the best peer (the fastest PyTorch contender, see ``best_peer``)."""
    summary: dict[str, Any] = {}
    for key, runs in outcome.runs.items():
        done = [m for m in runs if m is not None]
        if not done:
            continue
        stages = {s: median([m.stages[s] for m in done if s in m.stages]) for s in STAGES}
        entry: dict[str, Any] = {
            "end_to_end_s": median([m.end_to_end for m in done if m.end_to_end is not None]),
            "stages_s": {s: v for s, v in stages.items() if v is not None},
            "new_tokens": done[0].new_tokens,
            "prompt_tokens": done[0].prompt_tokens,
            "rounds": len(done),
        }
        if reference is not None and reference is not outcome:
            entry["ratio_to_reference"] = _round_ratios(runs, reference.runs.get(key, []))
        if best_peer is not None and best_peer is not outcome:
            entry["ratio_to_best_peer"] = _round_ratios(runs, best_peer.runs.get(key, []))
        summary[key] = entry
    return summary


def best_peer(outcomes: Sequence[ContenderOutcome], headline: Job) -> ContenderOutcome | None:
    """The fastest PyTorch contender end to end on the headline job (median over rounds): what a user of this
    machine would run instead of the engine, and what the headline ratios are taken to."""
    timed = {}
    for outcome in outcomes:
        done = [m.end_to_end for m in outcome.runs.get(headline.key, []) if m is not None and m.end_to_end]
        if outcome.spec.kind == "torch" and done:
            timed[outcome.spec.name] = (median(done), outcome)
    return min(timed.values(), key=lambda pair: pair[0])[1] if timed else None


def _round_ratios(ours: Sequence[Measurement | None], theirs: Sequence[Measurement | None]) -> dict[str, Any]:
    """Median over rounds of ours/theirs, for end to end and each stage both reported."""
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=False) if a is not None and b is not None]
    if not pairs:
        return {}
    whole = [a.end_to_end / b.end_to_end for a, b in pairs if a.end_to_end and b.end_to_end]
    ratios: dict[str, Any] = {"end_to_end": median(whole)} if whole else {}
    if whole:
        ratios["end_to_end_rounds"] = whole
    for stage in STAGES:
        values = [a.stages[stage] / b.stages[stage] for a, b in pairs if stage in a.stages and b.stages.get(stage)]
        if values:
            ratios[stage] = median(values)
    return ratios


@dataclass(frozen=True)
class Floors:
    """The least time each stage can take here: work over the best measured rate (compute), and for decode
    steps also the decoder's weight bytes over the best measured read bandwidth (memory)."""

    flops: dict[str, float]
    compute_s: dict[str, float]  # at the fp32 rate
    decode_bandwidth_s: dict[str, float]  # variant -> seconds per decode step, reading every weight once
    # precision -> stage -> seconds, at the best rate measured in that precision (fp32 always; bf16, int8, fp16
    # where probed); a contender's floor is the one of the precision it computes in.
    compute_s_by_precision: dict[str, dict[str, float]] = field(default_factory=dict)

    def compute_floor_s(self, precision: str, stage: str) -> float | None:
        if precision == "fp32":
            return self.compute_s.get(stage)
        return self.compute_s_by_precision.get(precision, {}).get(stage)

    def decode_floor_s(self, variant: str, precision: str) -> float | None:
        """The bandwidth floor of a decode step: the variant's decoder weight bytes, halved for fp32 weights a
        bf16 backend holds in bf16 (int8 variants are already a quarter of fp32 on disk)."""
        seconds = self.decode_bandwidth_s.get(variant)
        if seconds is None:
            return None
        return seconds / 2 if precision == "bf16" and variant == "fp32" else seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "flops": self.flops,
            "compute_s": self.compute_s,
            "decode_bandwidth_s": self.decode_bandwidth_s,
            "compute_s_by_precision": self.compute_s_by_precision,
        }


def floors(
    shape: ModelShape, rates: MachineRates, prompt_tokens: int, job: Job, decoder_bytes: dict[str, int]
) -> Floors:
    work = stage_flops(shape, prompt_tokens, job.max_new_tokens, batch=job.num_beams)
    rate = rates.matmul_gflops * 1e9
    by_precision = {}
    for precision in PRECISIONS:
        gflops = rates.matmul_rate(precision)
        if gflops:
            by_precision[precision] = {stage: flops / (gflops * 1e9) for stage, flops in work.items()}
    return Floors(
        flops=work,
        compute_s={stage: flops / rate for stage, flops in work.items()},
        decode_bandwidth_s={v: b / (rates.memory_read_gbps * 1e9) for v, b in decoder_bytes.items()},
        compute_s_by_precision=by_precision,
    )


def vision_floor_s(shape: ModelShape, rates: MachineRates) -> float:
    """The vision encoder's compute floor: the same figure ``floors`` gives, without needing a job."""
    return vision_flops(shape) / (rates.matmul_gflops * 1e9)


def vision_against_floor(profile: dict[str, Any], floor_s: float, read_gbps: float | None = None) -> dict[str, float]:
    """A profiled vision run (bench/vision_profile.py) in units of the compute floor: its FLOP-class kernels, its
    other operators, all kernels and the run's wall time. The FLOP-class ratio is as close as the stage can come
    to the floor with these kernels, even if every other operator cost nothing. With the measured read bandwidth,
    also the other operators' own floor (the bytes they move over that bandwidth) and the stage at best: FLOP-class
    kernels as measured plus the other operators at their floor."""
    floor_ms = 1000 * floor_s
    against = {
        "floor_ms": floor_ms,
        "flop_class_x": profile["flop_class_ms"] / floor_ms,
        "other_x": profile["other_ms"] / floor_ms,
        "kernel_x": profile["kernel_ms"] / floor_ms,
        "wall_x": profile["wall_ms"] / floor_ms,
    }
    if read_gbps and profile.get("other_bytes"):
        other_floor_ms = profile["other_bytes"] / (read_gbps * 1e6)
        against["other_floor_ms"] = other_floor_ms
        against["best_x"] = (profile["flop_class_ms"] + other_floor_ms) / floor_ms
    return against


def vision_profile_note(profile: dict[str, Any] | None) -> str:
    """The gist of the fp32 vision profile, for the vision target's row."""
    if not profile:
        return ""
    if "error" in profile:
        return "operator profile failed (see Vision encoder by operator)"
    floor = profile.get("floor")
    if not floor:
        return ""
    note = (
        f"profiled run: FLOP-class kernels {floor['flop_class_x']:.2f}x the floor, other ops "
        f"{floor['other_x']:.2f}x; at best {floor['flop_class_x']:.2f}x even if other ops cost nothing"
    )
    if "best_x" in floor:
        note += (
            f", {floor['best_x']:.2f}x with them at their own bandwidth floor "
            f"({profile['other_bytes'] / 1e9:.1f} GB moved: {floor['other_floor_ms']:,.0f} ms)"
        )
    return note


def end_to_end_note(
    engine: dict[str, Any] | None, reference: dict[str, Any] | None, profile: dict[str, Any] | None
) -> str:
    """What the fp32 end-to-end ratio would be with the vision encoder's memory-bound operators (transposes,
    softmax, bias adds, normalisation, in its profiled run) at their bandwidth floor, or free: how far the
    FLOP-class work and the data movement the model asks for leave it."""
    ours, theirs = _get(engine, "end_to_end_s"), _get(reference, "end_to_end_s")
    other_ms = _get(profile, "other_ms")
    if not ours or not theirs or other_ms is None:
        return ""
    note = f"the vision encoder's memory-bound ops take {other_ms:,.0f} ms (profiled run)"
    other_floor_ms = _get(profile, "floor", "other_floor_ms")
    if other_floor_ms is not None:
        at_floor = (ours - (other_ms - other_floor_ms) / 1000) / theirs
        note += f"; at their bandwidth floor ({other_floor_ms:,.0f} ms) {at_floor:.2f}x"
    return note + f"; were they free, {(ours - other_ms / 1000) / theirs:.2f}x"


MiB = 2**20
RSS_TARGET_CLIENTS = 8  # the level whose peak the note takes apart (the throughput target's level too)


def mib_text(count: float | None) -> str:
    """Bytes in MiB as the report prints them: whole above 100, two decimals below, a dash for nothing."""
    if not count:
        return "–"
    mib = count / MiB
    return f"{mib:,.0f}" if mib >= 100 else f"{mib:,.2f}"


def rss_note(server: dict[str, Any], vision_profile: dict[str, Any] | None = None) -> str:
    """Where the server's peak RSS goes: what the vision encoder's activations for one image take (from its
    profiled run), the 1-client peak over the weights, and at 8 clients the peak, the KV cache of the largest
    batch, and the peak less that cache over the weights (what the server holds besides the work the requests
    asked for). Figures missing from the run are left out."""
    weights = _get(server, "rss", "weight_bytes")
    if not weights:
        return ""
    levels = {level["concurrency"]: level for level in server.get("levels", []) if level.get("rss")}
    parts = []
    activations = _get(vision_profile, "activation_peak_bytes")
    if activations:
        parts.append(
            f"one image's vision activations {mib_text(activations)} MiB = {activations / weights:.2f}x weights "
            "(profiled run)"
        )
    if 1 in levels:
        peak = levels[1]["rss"]["peak_bytes"]
        parts.append(f"1 client: peak {mib_text(peak)} MiB = {peak / weights:.2f}x weights")
    crowd = levels.get(RSS_TARGET_CLIENTS)
    if crowd is not None:
        peak = crowd["rss"]["peak_bytes"]
        part = f"{RSS_TARGET_CLIENTS} clients: peak {mib_text(peak)} MiB = {peak / weights:.2f}x weights"
        kv = crowd.get("kv_cache")
        if kv:
            rest = peak - kv["bytes"]
            part += (
                f"; KV cache of the largest batch ({kv['requests']} requests x {kv['beams']} beams, "
                f"{kv['self_tokens']} tokens, {kv['encoder_tokens']} encoder tokens, cross-attention once per "
                f"{kv['cross_rows']}) {mib_text(kv['bytes'])} MiB (cross {mib_text(kv['cross_bytes'])}, self "
                f"{mib_text(kv['self_bytes'])}); peak less KV {mib_text(rest)} MiB = {rest / weights:.2f}x weights"
            )
        parts.append(part)
    polled = sorted(clients for clients, lv in levels.items() if lv["rss"]["source"] != HWM_SOURCE)
    if polled:
        parts.append(f"peaks at {', '.join(map(str, polled))} client(s) polled, not VmHWM (see the server section)")
    return "; ".join(parts)


@dataclass(frozen=True)
class Target:
    name: str
    goal: str  # human-readable, e.g. "<= 0.45x"
    measured: float | None
    limit: float
    lower_is_better: bool = True
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.limit if self.lower_is_better else self.measured >= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "goal": self.goal,
            "measured": self.measured,
            "limit": self.limit,
            "met": self.met,
            "note": self.note,
        }


def _get(mapping: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


_PREFIX = {"torch": "pytorch", "openvino": "openvino"}  # names of contenders recorded without their kind


def describe(name: str, contender: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    """(kind, variant, backend, precision) of a contender as its results record it."""
    return (
        contender.get("kind") or next((k for k in ("torch", "openvino") if name.startswith(_PREFIX[k])), "engine"),
        contender.get("variant") or "fp32",
        contender.get("backend"),
        contender.get("precision"),
    )


def precision_of(name: str, contender: dict[str, Any]) -> str:
    """The arithmetic a contender computes in (fp32, bf16, int8, fp16), which picks its floor."""
    kind, variant, _, precision = describe(name, contender)
    return compute_precision(kind, variant, precision)


def _fastest(
    contenders: dict[str, dict[str, Any]], key: str, kinds: tuple[str, ...], *path: str
) -> tuple[str, float] | None:
    found = {
        name: value
        for name, c in contenders.items()
        if describe(name, c)[0] in kinds and (value := _get(c.get("summary"), key, *path))
    }
    if not found:
        return None
    best = min(found, key=found.__getitem__)
    return best, found[best]


def is_onnxruntime_fp32(name: str, contender: dict[str, Any]) -> bool:
    """The engine on ONNX Runtime with the fp32 graphs: the configuration the fp32-to-fp32 target speaks of."""
    kind, variant, backend, precision = describe(name, contender)
    return kind == "engine" and variant == "fp32" and backend in (None, "onnxruntime") and precision in (None, "f32")


def _ms_text(seconds: float) -> str:
    """Milliseconds with one decimal, or three significant digits below one (a tiny model's floors)."""
    ms = 1000 * seconds
    return f"{ms:,.1f}" if ms >= 1 else f"{ms:.3g}"


def served_ratio(server: dict[str, Any] | None, contenders: dict[str, dict[str, Any]]) -> tuple[float | None, str]:
    """The server's 1-client p50 latency over the in-process median of the same configuration and job (the
    server's ``max_tokens`` at the model's default beams), and a note with both figures."""
    if not server:
        return None, ""
    name = server.get("contender")
    job = Job(int(server.get("max_tokens") or 0), int(server.get("beams") or 1))
    in_process = _get(contenders.get(name or ""), "summary", job.key, "end_to_end_s")
    level = next((lv for lv in server.get("levels", []) if lv.get("concurrency") == 1), None)
    served = _get(level, "latency_s", "p50")
    if not name or not in_process:
        return None, f"no in-process contender ran {job.key} in the served configuration"
    if not served:
        return None, "no 1-client level was served"
    return served / in_process, f"{name}, {job.key}: served p50 {served:.2f} s, in process {in_process:.2f} s"


def targets(
    contenders: dict[str, dict[str, Any]],
    floor_by_job: dict[str, Floors],
    headline: Job,
    server: dict[str, Any] | None,
    vision_profile: dict[str, Any] | None = None,
    best_peer: str | None = None,
) -> list[Target]:
    """The targets, evaluated on what was measured. ``contenders`` maps name -> its results (kind, variant,
    backend, precision and ``summary`` by job); ``best_peer`` is the fastest PyTorch contender (the reference when
    not given); ``vision_profile`` is the engine fp32 vision encoder's profile by operator."""
    key = headline.key
    peer = best_peer or REFERENCE
    tokens = headline.max_new_tokens
    engines = {n: c for n, c in contenders.items() if describe(n, c)[0] == "engine"}
    against_peer = {
        name: r
        for name, c in engines.items()
        if (r := _get(c.get("summary"), key, "ratio_to_best_peer" if best_peer else "ratio_to_reference", "end_to_end"))
    }
    best_name = min(against_peer, key=against_peer.__getitem__) if against_peer else None
    fp32_name = next((n for n, c in engines.items() if is_onnxruntime_fp32(n, c)), None)
    fp32 = _get(engines.get(fp32_name or ""), "summary") or {}
    fp32_ratio = _get(fp32, key, "ratio_to_reference", "end_to_end")
    floor = floor_by_job.get(key)

    best_note = f"{best_name} / {peer}" if best_name else ""
    if best_name and against_peer[best_name] > 0.5:
        ratio = _get(engines[best_name].get("summary"), key, "ratio_to_reference", "end_to_end")
        best_note += f"; fp32-to-fp32 (to {REFERENCE}) {ratio:.2f}x" if ratio else ""
        stages = _get(engines[best_name].get("summary"), key, "stages_s") or {}
        if stages:
            slowest = max(("vision_encoder", "text_encoder", "first_decode"), key=lambda s: stages.get(s) or 0.0)
            best_note += f"; its largest stage: {slowest} {stages.get(slowest, 0.0):.2f} s"

    vision_value, vision_note = None, ""
    vision_best = _fastest(
        {n: c for n, c in contenders.items() if describe(n, c)[0] in ("engine", "openvino")},
        key,
        ("engine", "openvino"),
        "stages_s",
        "vision_encoder",
    )
    if vision_best and floor:
        name, seconds = vision_best
        precision = precision_of(name, contenders[name])
        vision_floor = floor.compute_floor_s(precision, "vision_encoder")
        vision_value = seconds / vision_floor if vision_floor else None
        vision_note = f"{name}, {precision} floor" if vision_floor else f"{name}: no {precision} matmul rate measured"
        profiled = vision_profile_note(vision_profile) if precision == "fp32" else ""
        if profiled:  # where the engine's fp32 vision time goes, from its operator profile
            vision_note += "; the engine's fp32 " + profiled

    decode_value, decode_note = None, ""
    decode_best = _fastest(engines, key, ("engine",), "stages_s", "per_token_decode")
    if decode_best and floor:
        name, seconds = decode_best
        _, variant, _, _ = describe(name, contenders[name])
        decode_floor = floor.decode_floor_s(variant, precision_of(name, contenders[name]))
        decode_value = seconds / decode_floor if decode_floor else None
        decode_note = f"{name}: {_ms_text(seconds)} ms, floor {_ms_text(decode_floor)} ms" if decode_floor else name

    served_value, served_note = served_ratio(server, contenders)
    result = [
        Target(
            f"end to end, {tokens} tokens, batch 1: best engine configuration / best PyTorch ({peer})",
            "<= 0.5x",
            against_peer.get(best_name) if best_name else None,
            0.5,
            note=best_note,
        ),
        Target(
            "vision encoder, best configuration / its floor at that precision",
            "<= 1.5x",
            vision_value,
            1.5,
            note=vision_note,
        ),
        Target(
            "per-token decode, best configuration / bandwidth floor of the weights it reads",
            "<= 1.5x",
            decode_value,
            1.5,
            note=decode_note,
        ),
        Target(
            "served over HTTP, 1 client p50 / same configuration in process",
            "<= 1.05x",
            served_value,
            1.05,
            note=served_note,
        ),
        Target(
            f"end to end, {tokens} tokens, batch 1: engine fp32 on ONNX Runtime / PyTorch fp32",
            "<= 0.45x",
            fp32_ratio,
            0.45,
            note=end_to_end_note(fp32.get(key), _get(contenders, REFERENCE, "summary", key), vision_profile)
            if fp32_ratio and fp32_ratio > 0.45
            else "",
        ),
    ]
    if server is not None:
        result += [
            Target(
                "server throughput, 8 clients / 1 client",
                ">= 1.3x",
                _get(server, "scaling", "8"),
                1.3,
                lower_is_better=False,
                note=f"{_get(server, 'max_tokens')}-token outputs",
            ),
            Target("server overhead p50 (ms)", "<= 30 ms", _get(server, "overhead", "p50_ms"), 30.0),
            Target(
                "peak server RSS / weight bytes",
                "<= 1.25x",
                _get(server, "rss", "peak_over_weights"),
                1.25,
                note=rss_note(server, vision_profile),
            ),
        ]
    return result
