"""One batch of requests, start to finish, on the calling thread: pixels, encoder, search, decoded results.

Images are encoded one group at a time; after each group the batch may admit requests that arrived meanwhile
(the scheduler's ``admit``), whose images are encoded next. Decoding starts once no request is waiting, or the
batch is full, and then runs every admitted request to its end together; each answer is delivered as its request
leaves the batch, not when the longest one ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.engine.api import TaskRequest, TaskResult
from runtime.engine.decoder import OrtDecoder
from runtime.engine.encoding import encode_prompts, image_features
from runtime.engine.generation import generate
from runtime.engine.generation_config import GenerationConfig, SearchOptions
from runtime.engine.search import Search, make_search
from runtime.engine.sessions import GraphRunner
from runtime.errors import InferenceFailed, RuntimeErrorBase
from runtime.florence2 import Florence2Processor

TokenObserver = Callable[[list[int]], None]  # settled generated ids, after each decoder step


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Job:
    """A validated request: its prompt ids and search options are known, its image not yet preprocessed."""

    request: TaskRequest
    prompt_ids: tuple[int, ...]
    options: SearchOptions
    on_tokens: TokenObserver | None = None
    cancelled: Callable[[], bool] = field(default=_never)


Outcome = TaskResult | RuntimeErrorBase | None  # None: the job was cancelled
Admit = Callable[[], Sequence[Job]]  # jobs that arrived since the batch formed (none: stop admitting)
Deliver = Callable[[int, Outcome], None]  # (index among the jobs and the admitted ones, its outcome), once known


class Pipeline:
    def __init__(
        self,
        runner: GraphRunner,
        processor: Florence2Processor,
        config: GenerationConfig,
        vision_batch_size: int | None = None,
    ) -> None:
        self.runner = runner
        self.processor = processor
        self.config = config
        self.vision_batch_size = vision_batch_size  # None: every image of a batch in one vision-encoder run

    def run(self, jobs: Sequence[Job], admit: Admit | None = None, deliver: Deliver | None = None) -> list[Outcome]:
        """Results in the order of ``jobs`` followed by the jobs ``admit`` returned; a job whose image or answer
        cannot be processed gets its own error. ``deliver`` hears of each outcome as soon as it is known: an image
        error once the images are encoded, an answer when its request leaves the decoding batch."""
        everyone = list(jobs)
        outcomes: list[Outcome] = [None] * len(everyone)
        live: list[int] = []
        features: list[np.ndarray] = []
        seconds = {"preprocess": 0.0, "vision": 0.0}
        start = 0
        while start < len(everyone):
            indices, pixels = self._preprocess(everyone, start, outcomes, seconds)
            if indices:
                began = time.perf_counter()
                features.append(image_features(self.runner, np.stack(pixels), self.vision_batch_size))
                seconds["vision"] += time.perf_counter() - began
                live.extend(indices)
            start = len(everyone)
            if admit is not None:
                admitted = list(admit())
                everyone.extend(admitted)
                outcomes.extend([None] * len(admitted))
        if deliver is not None:
            for index, outcome in enumerate(outcomes):
                if outcome is not None:
                    deliver(index, outcome)
        if not live:
            return outcomes
        batch = [everyone[i] for i in live]
        encoded = encode_prompts(
            self.runner, np.concatenate(features, axis=0), [job.prompt_ids for job in batch], self.processor.pad_id
        )
        searches = [make_search(self.config, job.options) for job in batch]
        decoder = OrtDecoder(self.runner, encoded.hidden_states, encoded.attention_mask)

        def finished(position: int, timings: dict[str, float]) -> None:
            index, job = live[position], batch[position]
            if not job.cancelled():
                stages = {**seconds, **encoded.timings, **timings}
                prompt_tokens = encoded.prompt_tokens[position]
                outcomes[index] = self._result(job, searches[position], prompt_tokens, stages, len(batch))
            if deliver is not None:
                deliver(index, outcomes[index])

        generate(
            decoder,
            searches,
            self.config.decoder_start_token_id,
            on_step=_observer(batch),
            cancelled=lambda i: batch[i].cancelled(),
            finished=finished,
        )
        return outcomes

    def _preprocess(
        self, jobs: Sequence[Job], start: int, outcomes: list[Outcome], seconds: dict[str, float]
    ) -> tuple[list[int], list[np.ndarray]]:
        """Pixels of ``jobs[start:]`` that are still wanted; a job whose image fails gets its error in ``outcomes``."""
        began = time.perf_counter()
        indices: list[int] = []
        pixels: list[np.ndarray] = []
        for index in range(start, len(jobs)):
            job = jobs[index]
            if job.cancelled():
                continue
            try:
                pixels.append(self.processor.preprocess([job.request.image])[0])
            except RuntimeErrorBase as exc:
                outcomes[index] = exc
                continue
            indices.append(index)
        seconds["preprocess"] += time.perf_counter() - began
        return indices, pixels

    def _result(
        self, job: Job, search: Search, prompt_tokens: int, timings: dict[str, float], batch_size: int
    ) -> Outcome:
        token_ids, finish_reason = search.result()
        text = self.processor.decode(token_ids)
        task = job.request.task
        try:
            parsed = self.processor.answer(token_ids, task, job.request.image.size)
        except RuntimeErrorBase as exc:
            return exc
        except Exception as exc:  # a parser bug must fail this request only, with the reason logged upstream
            return InferenceFailed(f"could not parse the answer of {task}: {type(exc).__name__}: {exc}")
        return TaskResult(
            task=task,
            text=text,
            parsed=parsed,
            token_ids=tuple(token_ids),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(token_ids),
            finish_reason=finish_reason,
            timings=dict(timings),
            batch_size=batch_size,
        )


def _observer(batch: Sequence[Job]) -> Callable[[int, Search], None] | None:
    if all(job.on_tokens is None for job in batch):
        return None

    def observe(index: int, search: Search) -> None:
        callback = batch[index].on_tokens
        if callback is not None:
            callback(search.settled())

    return observe
