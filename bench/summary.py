"""From raw measurements to the figures of the report: medians, side-by-side ratios, floors and targets.

Ratios are taken per round (both sides measured minutes apart on the same machine state) and the median of the
rounds is reported; absolute medians are given beside them for scale, not for comparison across runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.flops import ModelShape, stage_flops, vision_flops
from bench.machine import MachineRates
from bench.measurement import STAGES, Measurement
from bench.memory import HWM_SOURCE
from bench.side_by_side import ContenderOutcome
from bench.workload import Job

REFERENCE = "pytorch-eager"


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise_contender(outcome: ContenderOutcome, reference: ContenderOutcome | None) -> dict[str, Any]:
    """Per job: median end to end and stages, and the median of the per-round ratios to the reference."""
    summary: dict[str, Any] = {}
    for key, runs in outcome.runs.items():
        done = [m for m in runs if m is not None]
        if not done:
            continue
        stages = {s: median([m.stages[s] for m in done if s in m.stages]) for s in STAGES}
        entry: dict[str, Any] = {
            "end_to_end_s": median([m.end_to_end for m in done]),
            "stages_s": {s: v for s, v in stages.items() if v is not None},
            "new_tokens": done[0].new_tokens,
            "prompt_tokens": done[0].prompt_tokens,
            "rounds": len(done),
        }
        if reference is not None and reference is not outcome:
            entry["ratio_to_reference"] = _round_ratios(runs, reference.runs.get(key, []))
        summary[key] = entry
    return summary


def _round_ratios(ours: Sequence[Measurement | None], theirs: Sequence[Measurement | None]) -> dict[str, Any]:
    """Median over rounds of ours/theirs, for end to end and each stage both reported."""
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=False) if a is not None and b is not None]
    if not pairs:
        return {}
    ratios: dict[str, Any] = {"end_to_end": median([a.end_to_end / b.end_to_end for a, b in pairs])}
    ratios["end_to_end_rounds"] = [a.end_to_end / b.end_to_end for a, b in pairs]
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
    compute_s: dict[str, float]
    decode_bandwidth_s: dict[str, float]  # variant -> seconds per decode step, reading every weight once

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "compute_s": self.compute_s, "decode_bandwidth_s": self.decode_bandwidth_s}


def floors(
    shape: ModelShape, rates: MachineRates, prompt_tokens: int, job: Job, decoder_bytes: dict[str, int]
) -> Floors:
    work = stage_flops(shape, prompt_tokens, job.max_new_tokens, batch=job.num_beams)
    rate = rates.matmul_gflops * 1e9
    return Floors(
        flops=work,
        compute_s={stage: flops / rate for stage, flops in work.items()},
        decode_bandwidth_s={v: b / (rates.memory_read_gbps * 1e9) for v, b in decoder_bytes.items()},
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


def targets(
    contenders: dict[str, dict[str, Any]],
    floor_by_job: dict[str, Floors],
    headline: Job,
    server: dict[str, Any] | None,
    vision_profile: dict[str, Any] | None = None,
) -> list[Target]:
    """The issue's targets, evaluated on what was measured. ``contenders`` maps name -> summary by job;
    ``vision_profile`` is the engine fp32 vision encoder's profile by operator, whose gist is the vision note."""
    key = headline.key
    fp32 = contenders.get("engine-fp32", {})
    ratios = {
        name: _get(summary, key, "ratio_to_reference", "end_to_end")
        for name, summary in contenders.items()
        if name.startswith("engine-")
    }
    measured = {name: r for name, r in ratios.items() if r is not None}
    best_name = min(measured, key=measured.__getitem__) if measured else None
    floor = floor_by_job.get(key)
    vision = _get(fp32, key, "stages_s", "vision_encoder")
    per_token = _get(fp32, key, "stages_s", "per_token_decode")
    vision_floor = floor.compute_s["vision_encoder"] if floor else None
    decode_floor = floor.decode_bandwidth_s.get("fp32") if floor else None
    result = [
        Target(
            f"end to end, {headline.max_new_tokens} tokens, batch 1: engine fp32 / PyTorch eager",
            "<= 0.45x",
            ratios.get("engine-fp32"),
            0.45,
            note=end_to_end_note(fp32.get(key), _get(contenders, REFERENCE, key), vision_profile),
        ),
        Target(
            f"end to end, {headline.max_new_tokens} tokens, batch 1: best variant / PyTorch eager",
            "<= 0.25x",
            measured.get(best_name) if best_name else None,
            0.25,
            note=best_name or "",
        ),
        Target(
            "vision encoder (engine fp32) / its FLOP floor",
            "<= 1.15x",
            vision / vision_floor if vision and vision_floor else None,
            1.15,
            note=vision_profile_note(vision_profile),
        ),
        Target(
            "per-token decode (engine fp32) / its bandwidth floor",
            "<= 2x",
            per_token / decode_floor if per_token and decode_floor else None,
            2.0,
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
