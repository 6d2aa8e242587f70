"""Requests the engine tests share: one case per task tag on noise images of different sizes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from engine_oracle import Case
from PIL import Image

from runtime.engine import EngineSettings, TaskRequest, TaskResult, load
from runtime.engine.model import Florence2Engine
from runtime.florence2 import TASKS, InputKind

MAX_NEW_TOKENS = 24
REGION = "<loc_52><loc_332><loc_932><loc_774>"
TEXT_INPUTS = {
    "<CAPTION_TO_PHRASE_GROUNDING>": "A green car parked in front of a yellow door",
    "<OPEN_VOCABULARY_DETECTION>": "a red bicycle",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "the person on the left",
}
IMAGE_SIZES = ((400, 300), (200, 500), (64, 64), (1024, 768), (333, 222))


def noise_image(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def every_task_case() -> list[Case]:
    """One case per task tag, with inputs where the tag takes one and images of different sizes."""
    cases = []
    for index, (tag, task) in enumerate(TASKS.items()):
        text_input = {InputKind.NONE: None, InputKind.REGION: REGION}.get(task.input_kind, TEXT_INPUTS.get(tag))
        cases.append(Case(noise_image(IMAGE_SIZES[index % len(IMAGE_SIZES)], seed=index), tag, text_input))
    return cases


def request(case: Case, num_beams: int, max_new_tokens: int = MAX_NEW_TOKENS) -> TaskRequest:
    return TaskRequest(
        image=case.image,
        task=case.task,
        text_input=case.text_input,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
    )


@contextlib.contextmanager
def loaded(folder: Path, backend: str = "auto") -> Iterator[Florence2Engine]:
    """The engine of ``folder`` with the tests' batching settings, closed on exit."""
    engine = load(folder, EngineSettings(backend=backend, max_batch_size=16, batch_wait_ms=5))
    try:
        yield engine
    finally:
        asyncio.run(engine.close())


def run_direct(engine: Florence2Engine, requests: Sequence[TaskRequest]) -> list[TaskResult]:
    """One batch through the pipeline on this thread (the batch is exactly ``requests``)."""
    outcomes = engine.pipeline.run([engine.prepare(r) for r in requests])
    for outcome in outcomes:
        if not isinstance(outcome, TaskResult):
            raise AssertionError(f"expected a result, got {outcome!r}")
    return outcomes  # type: ignore[return-value]
