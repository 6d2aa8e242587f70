"""``python -m bench``: build or reuse the model, measure the machine, race the contenders, load the server,
write ``<out>/<date>.json``, ``<out>/<date>.md`` and ``<out>/<date>.png``, and print the table."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import (
    artefacts,
    configurations,
    machine,
    plot,
    ray_row,
    report,
    server_load,
    side_by_side,
    summary,
    vision_profile,
    weights,
)
from bench.configurations import REFERENCE, EngineConfiguration
from bench.contenders import ContenderSpec
from bench.flops import ModelShape
from bench.settings import BenchSettings, from_args
from runtime.cpu import CpuFeatures, detect
from runtime.engine.fastest import openvino_is_installed

RAY_CLIENTS = 8  # the Ray row's throughput level


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True)
class Lineup:
    """The contenders a run races, and those it leaves out here with the reason."""

    specs: list[ContenderSpec]
    skipped: dict[str, str]
    server_engine: tuple[tuple[str, str], ...] = ()  # the served configuration's EngineSettings fields


def contender_specs(
    settings: BenchSettings,
    available: tuple[str, ...],
    cpu: CpuFeatures,
    engine_fields: frozenset[str] = frozenset(),
    has_openvino: bool = True,
    accepts_variant: Callable[[str], bool] = lambda _: False,
    fastest: Callable[[], tuple[str, str, str, str]] | None = None,
) -> Lineup:
    """PyTorch eager fp32 first (the reference), then bf16; OpenVINO on the vision encoder graph (f32, bf16); then
    the engine once per configuration and variant (``configurations.ENGINE_CONFIGURATIONS``).

    fp16 runs by default only with a GPU: ONNX Runtime's CPU provider has few fp16 kernels and casts around the
    rest; name it in ``--variants`` to time it on a CPU anyway. bf16 contenders run where the CPU has a bf16 unit
    (``--bf16``)."""
    wanted = settings.variants or tuple(v for v in available if v != "fp16" or settings.provider == "cuda")
    specs = [ContenderSpec(REFERENCE, "torch", settings.checkpoint, threads=settings.threads)]
    skipped: dict[str, str] = {}

    def bf16_ok(name: str, what: str) -> bool:
        reason = configurations.bf16_skip_reason(cpu, settings.bf16, settings.provider, what)
        if reason:
            skipped[name] = reason
        return reason is None

    if bf16_ok(f"{REFERENCE}-bf16", "torch bf16"):
        specs.append(
            ContenderSpec(f"{REFERENCE}-bf16", "torch", settings.checkpoint, threads=settings.threads, precision="bf16")
        )
    if settings.provider == "cpu" and settings.openvino_vision and "fp32" in available:
        for precision in ("f32", "bf16"):
            name = f"openvino-vision-{precision}"
            if not has_openvino:
                skipped[name] = "openvino is not installed"
            elif precision == "f32" or bf16_ok(name, "OpenVINO bf16"):
                specs.append(
                    ContenderSpec(
                        name, "openvino", settings.model_dir, "fp32", threads=settings.threads, precision=precision
                    )
                )
    for configuration in configurations.engine_configurations(engine_fields):
        for variant in configuration.variants or wanted:
            name = configuration.name(variant)
            if variant not in available and not (variant == "fastest" and accepts_variant(variant)):
                if configuration.variants is None:
                    _progress(f"variant {variant} is not in {settings.model_dir}; skipped")
                continue
            if configuration.backend == "openvino" and not has_openvino:
                skipped[name] = "openvino is not installed"
                continue
            if configuration.precision == "bf16" and not bf16_ok(name, "OpenVINO bf16"):
                continue
            backend, precision = configuration.backend, configuration.precision
            if variant == "fastest" and fastest is not None:
                # timed as what it chose, so that its precision (and so its floors) is the chosen one's
                backend, precision, variant, reason = fastest()
                same = EngineConfiguration(backend, precision).name(variant)
                if any(spec.name == same for spec in specs):
                    skipped[name] = f"chose {backend}, {precision}, {variant} ({reason}): measured as {same}"
                    continue
            specs.append(
                ContenderSpec(
                    name,
                    "engine",
                    settings.model_dir,
                    variant,
                    settings.provider,
                    settings.threads,
                    backend,
                    precision,
                )
            )
    return Lineup(specs, skipped, _served_fields(engine_fields))


def _served_fields(engine_fields: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The server runs the fp32-on-ONNX-Runtime configuration: named where the engine has a backend setting."""
    return (("backend", "onnxruntime"), ("precision", "f32")) if {"backend", "precision"} <= engine_fields else ()


def served_contender(specs: list[ContenderSpec], variant: str, engine: tuple[tuple[str, str], ...]) -> str | None:
    """The in-process contender of the configuration the server runs."""
    wanted = dict(engine)
    for spec in specs:
        same = spec.backend == wanted.get("backend") and spec.precision == wanted.get("precision")
        if spec.kind == "engine" and spec.variant == variant and same:
            return spec.name
    return None


def machine_info(cpu: CpuFeatures) -> dict[str, Any]:
    import numpy
    import onnxruntime

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu.model,
        "cpu_features": cpu.to_dict(),
        "cores": os.cpu_count(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "load_average_start": os.getloadavg(),
    }
    try:
        import torch
        import transformers

        info |= {"torch": torch.__version__, "transformers": transformers.__version__}
    except ImportError:
        pass
    if openvino_is_installed():
        import openvino

        info["openvino"] = openvino.__version__
    return info


def run(settings: BenchSettings) -> dict[str, Any]:
    started = time.perf_counter()
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    artefacts.ensure_checkpoint(settings.checkpoint, settings.arch, progress=_progress)
    artefacts.ensure_model(
        settings.model_dir,
        settings.checkpoint,
        settings.export_dtypes,
        complete=settings.complete_export,
        progress=_progress,
    )
    available = artefacts.variants_in(settings.model_dir)
    shape = ModelShape.from_configs(
        artefacts.read_json(settings.model_dir / "config.json"),
        artefacts.read_json(settings.model_dir / "preprocessor_config.json"),
    )
    weight_bytes = {v: weights.variant_weight_bytes(settings.model_dir, v) for v in available}
    cpu = detect()
    lineup = contender_specs(
        settings,
        available,
        cpu,
        configurations.engine_settings_fields(),
        openvino_is_installed(),
        configurations.accepts_variant,
        lambda: configurations.fastest_choice(settings.model_dir, settings.provider),
    )
    probe_skips = configurations.probe_skips(cpu, settings.bf16, settings.provider)
    results: dict[str, Any] = {
        "date": stamp,
        "settings": settings.to_dict(),
        "machine": machine_info(cpu),
        "model": {
            "arch": settings.arch,
            "model_dir": str(settings.model_dir),
            "checkpoint": str(settings.checkpoint),
            "variants": list(available),
            "image_tokens": shape.image_tokens(),
            "weight_bytes": weight_bytes,
        },
    }

    _progress(f"CPU: {cpu.summary()}")
    probes = [_measure_machine(settings, probe_skips)]
    floor_by_job: dict[str, summary.Floors] = {}
    results["contenders"] = {}
    with tempfile.TemporaryDirectory(prefix="florence-bench-") as scratch:
        log_dir = Path(scratch)
        if settings.side_by_side:
            results["contenders"], results["best_peer"] = _race(settings, lineup, log_dir)
            probes.append(_measure_machine(settings, probe_skips))
            rates = machine.best_of(probes)
            decoder_bytes = {v: b["decoder_model_merged"] for v, b in weight_bytes.items()}
            prompt_tokens = _prompt_tokens(results["contenders"], shape)
            floor_by_job = {
                job.key: summary.floors(shape, rates, prompt_tokens, job, decoder_bytes) for job in settings.jobs
            }
            results["floors"] = {key: f.to_dict() for key, f in floor_by_job.items()}
            results["floors_method"] = FLOORS_METHOD
        if settings.vision_profile:
            vision_floor_s = summary.vision_floor_s(shape, machine.best_of(probes))
            results["vision_profile"] = _profile_vision(
                settings, available, vision_floor_s, machine.best_of(probes).memory_read_gbps, log_dir
            )
        if settings.server:
            served = settings.server_variant or ("fp32" if "fp32" in available else available[0])
            if served in available:
                results["server"] = _load_server(
                    settings,
                    served,
                    sum(weight_bytes[served].values()),
                    log_dir,
                    lineup.server_engine,
                    served_contender(lineup.specs, served, lineup.server_engine),
                )
            else:
                results["server"] = {"error": f"the model folder has no {served} variant", "variant": served}

        if settings.ray:
            results["ray"] = _ray_row(settings, log_dir)

    results["rates"] = machine.best_of(probes).to_dict()
    results["rate_probes"] = [p.to_dict() for p in probes]
    server = results.get("server")
    measured_server = server if server and server.get("levels") else None
    results["targets"] = [
        t.to_dict()
        for t in summary.targets(
            results["contenders"],
            floor_by_job,
            settings.headline,
            measured_server,
            results.get("vision_profile", {}).get("fp32"),
            best_peer=(results.get("best_peer") or {}).get("name"),
        )
    ]
    results["machine"]["load_average_end"] = os.getloadavg()
    results["duration_s"] = time.perf_counter() - started
    return results


FLOORS_METHOD = (
    "FLOPs counted analytically from config.json (bench/flops.py; matmul-class ops only, equal to torch's "
    "FlopCounterMode on a random model) over the best matmul rate measured in this run at the precision each "
    "contender computes in (fp32: ONNX Runtime, numpy, torch; bf16: torch, OpenVINO; int8: ONNX Runtime "
    "MatMulInteger, torch _int_mm; probes before and after the contenders); decode bandwidth floor: the decoder "
    "graph's initializer bytes (halved for fp32 weights run in bf16) over the best measured read bandwidth"
)


def _measure_machine(settings: BenchSettings, skip: dict[str, str]) -> machine.MachineRates:
    _progress("measuring matmul rates and memory bandwidth")
    providers = ("CUDAExecutionProvider",) if settings.provider == "cuda" else ()
    rates = machine.measure(settings.memory_probe_mb, providers=providers, skip=skip)
    by_precision = ", ".join(
        f"{p} {rate:.0f}" for p in machine.PRECISIONS if (rate := rates.matmul_rate(p)) is not None
    )
    _progress(
        f"matmul GFLOP/s {by_precision} (fp32: ORT {rates.ort_matmul_gflops:.0f}, numpy "
        f"{rates.numpy_matmul_gflops:.0f}); memory read {rates.memory_read_gbps:.1f} GB/s"
    )
    return rates


def _race(settings: BenchSettings, lineup: Lineup, log_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every contender's raw runs and its summary (medians, ratios to the reference and to the best peer), by
    name, those skipped here with their reason; and the best peer."""
    outcomes = side_by_side.run_rounds(
        lineup.specs,
        settings.jobs,
        settings.rounds,
        log_dir,
        load_timeout_s=settings.load_timeout_s,
        job_timeout_s=settings.job_timeout_s,
        progress=_progress,
    )
    reference = next((o for o in outcomes if o.spec.name == REFERENCE), None)
    peer = summary.best_peer(outcomes, settings.headline)
    contenders = {o.spec.name: o.to_dict() for o in outcomes}
    for outcome in outcomes:
        contenders[outcome.spec.name]["summary"] = summary.summarise_contender(outcome, reference, peer)
    for name, reason in lineup.skipped.items():
        kind = summary.describe(name, {})[0]
        contenders[name] = {"kind": kind, "skipped": reason, "errors": [], "summary": {}, "ready": {}}
        _progress(f"{name} skipped: {reason}")
    best = {
        "name": peer.spec.name if peer else None,
        "rule": f"the fastest PyTorch contender end to end on {settings.headline.key} (median over rounds)",
        "end_to_end_s": {
            o.spec.name: summary.median(
                [m.end_to_end for m in o.runs.get(settings.headline.key, []) if m and m.end_to_end]
            )
            for o in outcomes
            if o.spec.kind == "torch"
        },
    }
    return contenders, best


def profiled_variants(settings: BenchSettings, available: tuple[str, ...]) -> list[str]:
    """The variants whose vision encoder is profiled: those of ``PROFILED_VARIANTS`` the folder has and the run
    times (all of them when ``--variants`` is not given)."""
    wanted = settings.variants or available
    return [v for v in vision_profile.PROFILED_VARIANTS if v in available and v in wanted]


def _profile_vision(
    settings: BenchSettings, available: tuple[str, ...], floor_s: float, read_gbps: float, log_dir: Path
) -> dict[str, Any]:
    """Each profiled variant's vision encoder by operator type, with its figures in units of the compute floor
    (the memory-bound operators also against the read bandwidth); a variant that failed holds its error."""
    profiles: dict[str, Any] = {}
    for variant in profiled_variants(settings, available):
        _progress(f"profiling the {variant} vision encoder by operator type")
        try:
            profile = vision_profile.profile_in_child(
                settings.model_dir,
                variant,
                log_dir / f"vision-profile-{variant}.log",
                provider=settings.provider,
                threads=settings.threads,
                timeout_s=settings.load_timeout_s + settings.job_timeout_s,
            )
        except vision_profile.ProfileFailed as exc:
            _progress(f"  {exc}")
            profiles[variant] = {"variant": variant, "error": str(exc)}
            continue
        profiles[variant] = {**profile, "floor": summary.vision_against_floor(profile, floor_s, read_gbps)}
        floor = profiles[variant]["floor"]
        _progress(
            f"  {profile['wall_ms']:,.0f} ms: FLOP-class kernels {profile['flop_class_ms']:,.0f} ms "
            f"({floor['flop_class_x']:.2f}x the floor), other ops {profile['other_ms']:,.0f} ms "
            f"({floor['other_x']:.2f}x)"
        )
    return profiles


def _load_server(
    settings: BenchSettings,
    variant: str,
    weight_bytes: int,
    log_dir: Path,
    engine: tuple[tuple[str, str], ...] = (),
    contender: str | None = None,
) -> dict[str, Any]:
    plan = server_load.ServerPlan(
        model_dir=settings.model_dir,
        variant=variant,
        provider=settings.provider,
        concurrency=settings.concurrency,
        max_tokens=settings.server_tokens,
        requests_per_level=settings.server_requests,
        seconds_per_level=settings.server_seconds,
        overhead_requests=settings.overhead_requests,
        load_timeout_s=settings.load_timeout_s,
        request_timeout_s=settings.job_timeout_s,
        weight_bytes=weight_bytes,
        engine=engine,
        contender=contender,
    )
    _progress(f"HTTP server ({variant}) under {', '.join(map(str, settings.concurrency))} concurrent clients")
    served = server_load.run(plan, log_dir, _progress)
    generation = settings.model_dir / "generation_config.json"
    served["beams"] = int((artefacts.read_json(generation) if generation.is_file() else {}).get("num_beams") or 1)
    return served


def _ray_row(settings: BenchSettings, log_dir: Path) -> dict[str, Any]:
    """On the tiny model whatever the run's architecture: the targets speak of it, and it keeps two replicas and
    a direct server affordable on a small machine."""
    if not ray_row.ray_installed():
        return {"skipped": "the ray extra is not installed (pip install -e '.[ray]')"}
    model_dir = settings.model_dir
    if settings.arch != "tiny":
        checkpoint = artefacts.ensure_checkpoint(Path("checkpoints/tiny"), "tiny", progress=_progress)
        model_dir = Path("models/tiny")
        artefacts.ensure_model(model_dir, checkpoint, ("fp32",), complete=False, progress=_progress)
    plan = ray_row.RayPlan(
        model_dir=model_dir,
        clients=RAY_CLIENTS,
        max_tokens=max(settings.server_tokens, ray_row.MIN_TOKENS),
        requests=4 * RAY_CLIENTS,
        seconds=settings.server_seconds,
        overhead_requests=max(settings.overhead_requests, 10),
        load_timeout_s=max(settings.load_timeout_s, 240.0),
        request_timeout_s=settings.job_timeout_s,
    )
    return ray_row.run(plan, log_dir, _progress)


def _prompt_tokens(contenders: dict[str, Any], shape: ModelShape) -> int:
    """Prompt tokens of the benchmark request (``<s> prompt </s>``), from what a contender's encoder saw."""
    for contender in contenders.values():
        for job in contender.get("summary", {}).values():
            if job.get("prompt_tokens"):  # a vision-only contender sees no prompt
                return int(job["prompt_tokens"]) - shape.image_tokens()
    return 0


def write(results: dict[str, Any], out: Path, settings: BenchSettings) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / f"{results['date']}.json",
        "markdown": out / f"{results['date']}.md",
        "plot": out / f"{results['date']}.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    markdown = report.markdown(results, settings.headline)
    paths["markdown"].write_text(markdown)
    plot.draw(results, settings.headline, paths["plot"])
    return paths


def main(argv: list[str] | None = None) -> int:
    settings = from_args(argv)
    try:
        results = run(settings)
    except artefacts.BuildFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    paths = write(results, settings.out, settings)
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
