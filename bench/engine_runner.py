"""Our contender: ``runtime.engine`` over one variant of the model folder, one request at a time.

The stages come from the engine's own ``TaskResult.timings`` (seconds); end to end is the wall time of
``await engine.run(request)``, from the PIL image to the post-processed result, as for the reference.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench import workload
from bench.measurement import Measurement
from bench.workload import Job

# Our stage names and, for each, the keys the engine may report it under (first found wins).
TIMING_KEYS: dict[str, tuple[str, ...]] = {
    "preprocess": ("preprocess",),
    "vision_encoder": ("vision_encoder", "vision"),
    "text_encoder": ("text_encoder", "encoder"),
    "first_decode": ("first_decode",),
    "per_token_decode": ("per_token_decode", "decode_per_token"),
}


class MissingTiming(KeyError):
    """The engine did not report a stage the benchmark needs."""


def stages_from_timings(timings: dict[str, float]) -> dict[str, float]:
    """Our stages from the engine's timings; ``preprocess`` may be absent (the engine then folds it elsewhere)."""
    stages: dict[str, float] = {}
    for stage, keys in TIMING_KEYS.items():
        found = next((timings[key] for key in keys if key in timings), None)
        if found is None:
            if stage == "preprocess":
                continue
            raise MissingTiming(f"the engine reported no {stage!r} timing (looked for {keys}; got {sorted(timings)})")
        stages[stage] = float(found)
    return stages


class EngineRunner:
    def __init__(
        self,
        model_dir: Path,
        variant: str = "fp32",
        provider: str = "cpu",
        threads: int = 0,
        backend: str | None = None,
        precision: str | None = None,
    ) -> None:
        from runtime.engine import load
        from runtime.engine.settings import EngineSettings

        # backend and precision are set only when given: an engine without those settings still runs the rest.
        chosen = {k: v for k, v in (("backend", backend), ("precision", precision)) if v is not None}
        settings = EngineSettings(provider=provider, variant=variant, intra_op_threads=threads, **chosen)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.engine: Any = self._wait(self._load(load, model_dir, settings))
        self.image = workload.image()
        self.device_name = ", ".join(self.engine.info.providers)

    @staticmethod
    async def _load(load: Any, model_dir: Path, settings: Any) -> Any:
        loaded = load(str(model_dir), settings)
        return await loaded if asyncio.iscoroutine(loaded) else loaded

    def _wait(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def warm_up(self) -> None:
        self.run(Job(max_new_tokens=2, num_beams=1))

    def run(self, job: Job) -> Measurement:
        from runtime.engine import TaskRequest

        request = TaskRequest(
            image=self.image,
            task=workload.TASK,
            max_new_tokens=job.max_new_tokens,
            num_beams=job.num_beams,
            ignore_eos=True,
        )
        started = time.perf_counter()
        result = self._wait(self.engine.run(request))
        finished = time.perf_counter()
        return Measurement(
            stages=stages_from_timings(result.timings),
            end_to_end=finished - started,
            new_tokens=result.completion_tokens,
            prompt_tokens=result.prompt_tokens,
        )
