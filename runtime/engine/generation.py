"""The decoding loop: one decoder batch for many requests, each with its own search.

Every request starts with one row (its decoder start token); a beam search widens to its beams after the
first step. After each step the rows of finished or cancelled requests leave the batch, and the others
continue with the rows their searches picked, so a request that stops early stops costing decoder work.

Requests cannot join a batch that is already decoding: the merged decoder graph takes no self-attention mask
and derives positions from the length of the past, so every row must be at the same step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from runtime.engine.search import Search


class Decoder(Protocol):
    def start(self, token_ids: np.ndarray) -> np.ndarray:
        """First step, one row per request; float32 logits [rows, vocab]."""

    def step(self, token_ids: np.ndarray) -> np.ndarray:
        """Next step with one token per row; float32 logits [rows, vocab]."""

    def select(self, parents: Sequence[np.ndarray], kept: np.ndarray) -> None:
        """Before the next step: request ``kept[i]`` (a position among the current requests) continues from
        the current rows ``parents[i]`` (indices into all current rows); the other requests leave."""


StepObserver = Callable[[int, Search], None]  # (request index, its search) after each of its steps
Cancelled = Callable[[int], bool]  # request index -> drop it now
Finished = Callable[[int, dict[str, float]], None]  # (request index, stage timings so far) when it leaves the batch


def generate(
    decoder: Decoder,
    searches: Sequence[Search],
    start_token: int,
    on_step: StepObserver | None = None,
    cancelled: Cancelled | None = None,
    finished: Finished | None = None,
) -> dict[str, float]:
    """Run all searches to completion; returns stage timings in seconds. ``finished`` hears of each request as it
    leaves the batch (done or cancelled), with the timings until then, so that its answer need not wait for the
    others'."""
    active = list(range(len(searches)))
    step_seconds: list[float] = []
    started = time.perf_counter()
    logits = decoder.start(np.full(len(searches), start_token, dtype=np.int64))
    while True:
        parents: list[np.ndarray] = []
        tokens: list[np.ndarray] = []
        still: list[int] = []
        kept: list[int] = []
        left: list[int] = []
        offset = 0
        for position, index in enumerate(active):
            search = searches[index]
            rows = search.rows
            local_parents = search.advance(logits[offset : offset + rows])
            if on_step is not None:
                on_step(index, search)
            if not (search.done or (cancelled is not None and cancelled(index))):
                parents.append(local_parents + offset)
                tokens.append(search.next_tokens)
                still.append(index)
                kept.append(position)
            else:
                left.append(index)
            offset += rows
        now = time.perf_counter()
        step_seconds.append(now - started)
        if finished is not None:
            for index in left:
                finished(index, _timings(step_seconds))
        if not still:
            break
        active = still
        started = now
        decoder.select(parents, np.array(kept))
        logits = decoder.step(np.concatenate(tokens))
    return _timings(step_seconds)


def _timings(step_seconds: Sequence[float]) -> dict[str, float]:
    later = step_seconds[1:]
    return {
        "first_decode": step_seconds[0],
        "decode_per_token": sum(later) / len(later) if later else 0.0,
        "decode": sum(step_seconds),
    }
