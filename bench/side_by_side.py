"""Rounds of the same jobs over every contender, alternating, so that slow phases of a shared machine hit all.

Every contender is loaded once in its own process. A round runs each job on each contender in turn (A B C, then
the next job), and the order of contenders rotates from round to round so that no contender always follows the
same neighbour. Ratios are taken within a round, where the machine's state was the same for both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contenders import ContenderFailed, ContenderProcess, ContenderSpec
from bench.measurement import Measurement
from bench.workload import Job


@dataclass
class ContenderOutcome:
    spec: ContenderSpec
    ready: dict[str, Any] = field(default_factory=dict)  # load_s, warmup_s, rss_after_load_bytes
    runs: dict[str, list[Measurement | None]] = field(default_factory=dict)  # job key -> one per round
    errors: list[str] = field(default_factory=list)
    peak_rss_bytes: int | None = None
    skipped: str | None = None  # why it did not run at all

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "variant": self.spec.variant,
            "provider": self.spec.provider,
            "backend": self.spec.backend,
            "precision": self.spec.precision,
            "path": str(self.spec.path),
            "ready": self.ready,
            "runs": {key: [m.to_dict() if m else None for m in runs] for key, runs in self.runs.items()},
            "errors": self.errors,
            "peak_rss_bytes": self.peak_rss_bytes,
            "skipped": self.skipped,
        }


def run_rounds(
    specs: Sequence[ContenderSpec],
    jobs: Sequence[Job],
    rounds: int,
    log_dir: Path,
    *,
    load_timeout_s: float,
    job_timeout_s: float,
    progress: Callable[[str], None] = print,
) -> list[ContenderOutcome]:
    outcomes = [ContenderOutcome(spec) for spec in specs]
    processes: dict[str, ContenderProcess] = {}
    try:
        for outcome in outcomes:
            name = outcome.spec.name
            progress(f"loading {name}")
            try:
                processes[name] = ContenderProcess(outcome.spec, log_dir / f"{name}.log", load_timeout_s)
            except ContenderFailed as exc:
                outcome.skipped = str(exc)
                progress(f"  skipped: {exc}")
                continue
            outcome.ready = processes[name].ready
            outcome.runs = {job.key: [] for job in jobs}
            progress(f"  loaded in {outcome.ready.get('load_s', 0):.1f} s")

        live = [o for o in outcomes if o.skipped is None]
        for round_index in range(rounds):
            shift = round_index % max(1, len(live))
            order = live[shift:] + live[:shift]
            for job in jobs:
                for outcome in order:
                    outcome.runs[job.key].append(_run_one(processes, outcome, job, job_timeout_s))
                    measured = outcome.runs[job.key][-1]
                    took = f"{measured.end_to_end or measured.stages['vision_encoder']:.2f} s" if measured else "failed"
                    progress(f"round {round_index + 1}/{rounds} {job.key} {outcome.spec.name}: {took}")
    finally:
        for outcome in outcomes:
            process = processes.get(outcome.spec.name)
            if process is not None:
                outcome.peak_rss_bytes = process.close().get("peak_rss_bytes")
    return outcomes


def _run_one(
    processes: dict[str, ContenderProcess], outcome: ContenderOutcome, job: Job, timeout_s: float
) -> Measurement | None:
    process = processes.get(outcome.spec.name)
    if process is None:
        return None
    try:
        return process.run(job, timeout_s)
    except ContenderFailed as exc:
        outcome.errors.append(f"{job.key}: {exc}")
        if not process.alive:  # it died or was stopped: later jobs of this contender are recorded as failed
            processes.pop(outcome.spec.name).kill()
        return None
