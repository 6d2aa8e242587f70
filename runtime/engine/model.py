"""``load(path)``: the Florence-2 engine (ONNX Runtime or OpenVINO) behind the Engine protocol of runtime.engine.api.

Requests are validated on the caller's loop (cheap), then queued to the micro-batching scheduler, whose worker
thread runs preprocessing, the graphs and the search. Results come back to whichever loop awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from runtime.engine.api import ModelInfo, TaskQuery, TaskRequest, TaskResult
from runtime.engine.fastest import resolve
from runtime.engine.generation_config import GenerationConfig
from runtime.engine.pipeline import Job, Outcome, Pipeline, TokenObserver
from runtime.engine.scheduler import Batch, MicroBatcher, Ticket, wait
from runtime.engine.sessions import GraphRunner, Sessions, open_sessions
from runtime.engine.settings import EngineSettings
from runtime.engine.streaming import TextDeltas
from runtime.engine.task_rules import TaskRules
from runtime.errors import (
    InvalidImage,
    ModelLoadFailed,
    RuntimeErrorBase,
    StreamNotSupported,
)
from runtime.florence2 import Florence2Processor

log = logging.getLogger(__name__)

_WARMUP_TOKENS = 4


class Florence2Engine:
    def __init__(
        self,
        path: Path,
        settings: EngineSettings,
        processor: Florence2Processor,
        runner: GraphRunner,
        config: GenerationConfig,
        *,
        random_weights: bool,
        max_positions: int | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.config = config
        self.runner = runner
        self.pipeline = Pipeline(runner, processor, config, _vision_batch_size(settings, runner))
        # The decoder has max_positions learned positions; the last generated token is never fed back.
        self.max_new_tokens = (
            settings.max_new_tokens if max_positions is None else min(settings.max_new_tokens, max_positions)
        )
        self.rules = TaskRules(processor, config, self.max_new_tokens, settings.max_beams)
        variants = runner.variants() if isinstance(runner, Sessions) else {}
        self.info = ModelInfo(
            name=path.name,
            path=str(path),
            random_weights=random_weights,
            variant=settings.variant,
            providers=tuple(getattr(runner, "providers", ())),
            graph_variants=tuple(sorted(variants.items())),
        )
        self.recent_batch_sizes: deque[int] = deque(maxlen=1024)  # observability: metrics and tests
        self._batcher: MicroBatcher[Job, TaskResult] = MicroBatcher(
            self._run_batch,
            max_batch_size=settings.max_batch_size,
            batch_wait_s=settings.batch_wait_ms / 1000,
            name=f"florence2-{path.name}",
            on_batch=lambda size, _seconds: self.recent_batch_sizes.append(size),
        )

    # Engine protocol

    def is_text_task(self, task: str) -> bool:
        return self.rules.is_text_task(task)

    def validate(self, request: TaskRequest) -> None:
        self.prepare(request)

    def check(self, query: TaskQuery) -> tuple[int, ...]:
        return self.rules.check(query)

    async def run(self, request: TaskRequest) -> TaskResult:
        return await self._batcher.run(self.prepare(request))

    async def run_batch(self, requests: Sequence[TaskRequest]) -> list[TaskResult]:
        jobs = [self.prepare(request) for request in requests]  # all valid, or none is queued
        return await self._batcher.run_many(jobs)

    async def stream(self, request: TaskRequest) -> AsyncIterator[str | TaskResult]:
        """Text deltas whose concatenation is the answer (``parsed[task]``), then the TaskResult."""
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[list[int]] = asyncio.Queue()

        def on_tokens(ids: list[int]) -> None:
            with contextlib.suppress(RuntimeError):  # the consumer's loop is gone; the job is dropped next step
                loop.call_soon_threadsafe(updates.put_nowait, ids)

        job = self.prepare(request, on_tokens)  # validates the request
        if not self.processor.is_text_task(request.task):
            raise StreamNotSupported(
                f"{request.task} answers with structured data, which cannot be streamed; send it without stream",
                param="stream",
            )
        (ticket,) = self._batcher.submit([job])
        waiter = asyncio.ensure_future(wait(ticket))
        getter: asyncio.Future[list[int]] | None = None
        deltas = TextDeltas(self.processor, strip_ids=self.processor.special_ids)
        try:
            while not waiter.done():
                getter = asyncio.ensure_future(updates.get())
                await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    break
                if delta := deltas.update(getter.result()):
                    yield delta
            result = waiter.result()
            # Updates the worker sent before it answered are queued ahead of the answer (call_soon_threadsafe keeps
            # their order): they are all here now, and each still makes its own delta.
            while not updates.empty():
                if delta := deltas.update(updates.get_nowait()):
                    yield delta
            answer = result.parsed.get(request.task)
            if isinstance(answer, str) and (rest := deltas.finish(answer)):
                yield rest
            yield result
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            if not waiter.done():
                waiter.cancel()  # the consumer left: the request leaves its batch at the next step

    async def close(self, grace_s: float | None = 30.0) -> None:
        """Finish queued work and stop the worker; a hung session does not hold shutdown past ``grace_s``."""
        await asyncio.to_thread(self._batcher.close, grace_s)

    # Work

    def warm_up(self) -> float:
        """One short request through every graph (greedy and beam), so the first real request is not slow."""
        started = time.perf_counter()
        image = Image.new("RGB", (64, 48), (127, 127, 127))
        beams = min(self.config.num_beams, self.settings.max_beams)
        request = TaskRequest(image=image, task="<CAPTION>", max_new_tokens=_WARMUP_TOKENS, num_beams=beams)
        try:
            (outcome,) = self.pipeline.run([self.prepare(request)])
        except RuntimeErrorBase as exc:
            outcome = exc
        if isinstance(outcome, Exception):
            raise ModelLoadFailed(f"{self.info.path}: the warm-up request failed: {outcome}") from outcome
        seconds = time.perf_counter() - started
        log.info("%s: warmed up in %.2f s", self.info.name, seconds)
        return seconds

    def prepare(self, request: TaskRequest, on_tokens: TokenObserver | None = None) -> Job:
        """Validate ``request`` and resolve its prompt ids and search options (cheap; on the caller's thread)."""
        if not isinstance(request.image, Image.Image):
            raise InvalidImage("the request needs one image (a PIL image)", param="image")
        prompt = request.prompt_ids
        if prompt is None:  # not checked (and tokenised) by ``check`` before
            prompt = tuple(self.processor.prompt_ids(request.task, request.text_input))
        options = self.rules.options(request.max_new_tokens, request.num_beams, ignore_eos=request.ignore_eos)
        return Job(request, tuple(prompt), options, on_tokens=on_tokens)

    def _run_batch(self, batch: Batch[Job, TaskResult]) -> list[TaskResult | BaseException]:
        jobs = [_bind_cancel(ticket) for ticket in batch.tickets]
        admit = (lambda: [_bind_cancel(t) for t in batch.admit()]) if self.settings.admit_while_encoding else None
        outcomes = self.pipeline.run(
            jobs, admit, lambda i, outcome: batch.settle(i, _settle(outcome, batch.tickets[i]))
        )
        return [_settle(outcome, ticket) for outcome, ticket in zip(outcomes, batch.tickets, strict=True)]


def _vision_batch_size(settings: EngineSettings, runner: GraphRunner) -> int | None:
    if settings.vision_batch_size:
        return settings.vision_batch_size
    return 1 if getattr(runner, "device", "cpu") == "cpu" else None


def _bind_cancel(ticket: Ticket[Job, TaskResult]) -> Job:
    job = ticket.item
    return Job(job.request, job.prompt_ids, job.options, job.on_tokens, cancelled=ticket.abandoned.is_set)


def _settle(outcome: Outcome, ticket: Ticket[Job, TaskResult]) -> TaskResult | BaseException:
    if outcome is None:
        return asyncio.CancelledError()
    if isinstance(outcome, TaskResult):
        outcome.timings["queue"] = (ticket.taken_at or ticket.enqueued_at) - ticket.enqueued_at
    return outcome


def load(
    path: str | Path, settings: EngineSettings | None = None, *, runner: GraphRunner | None = None
) -> Florence2Engine:
    """Open a model folder (see ARCHITECTURE.md), create its sessions and warm them up.

    ``runner`` replaces the sessions the settings' backend opens (tests use it to perturb a graph).
    """
    folder = Path(path)
    settings = settings or EngineSettings()
    if not (folder / "config.json").is_file():
        raise ModelLoadFailed(
            f"{folder} is not a model folder (no config.json); export one with `make export MODEL=... OUT=...`"
        )
    model_config = _read_config(folder / "config.json")
    random_weights = bool(model_config.get("random_weights"))
    if random_weights:
        log.warning(
            "\n%s\n  %s HAS RANDOM WEIGHTS: its outputs mean nothing. It exists to exercise the code paths.\n%s",
            "!" * 100,
            folder,
            "!" * 100,
        )
    if runner is None:
        settings = resolve(settings, folder)  # variant=fastest: decided (and logged) once, shown in ModelInfo
    processor = Florence2Processor.from_model_dir(folder)
    config = GenerationConfig.from_model_dir(folder)
    text_config = model_config.get("text_config") or model_config
    max_positions = text_config.get("max_position_embeddings")
    engine = Florence2Engine(
        folder,
        settings,
        processor,
        runner if runner is not None else open_sessions(folder, settings),
        config,
        random_weights=random_weights,
        max_positions=int(max_positions) if max_positions else None,
    )
    if settings.warmup:
        engine.warm_up()
    return engine


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadFailed(f"{path} cannot be read as JSON ({exc}); export the model again") from exc
    if not isinstance(data, dict):
        raise ModelLoadFailed(f"{path} must hold a JSON object; export the model again")
    return data
