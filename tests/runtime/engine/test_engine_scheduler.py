"""The micro-batching scheduler on a fake batch function: bounded size, bounded wait, admission while a batch
runs, failure isolation, cancels."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from waiting import wait_until_async

from runtime.engine.scheduler import Batch, MicroBatcher
from runtime.errors import InferenceFailed, InvalidRequest, Unavailable


class Recorder:
    def __init__(
        self, fail_on: set[int] | None = None, hold: threading.Event | None = None, admit: bool = False
    ) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on or set()
        self.hold = hold
        self.admit = admit
        self.admitted: list[list[int]] = []
        self.holding = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, batch: Batch[int, int]) -> Sequence[int | BaseException]:
        self.threads.add(threading.current_thread().name)
        if self.hold is not None:
            self.holding.set()
            self.hold.wait(5)
        if self.admit:
            self.admitted.append([t.item for t in batch.admit()])
        items = [t.item for t in batch.tickets]
        self.batches.append(items)
        if self.fail_on & set(items):
            raise RuntimeError("session exploded")
        return [InvalidRequest(f"bad {i}") if i < 0 else i * 10 for i in items]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def until_queued(b: MicroBatcher[int, int], count: int) -> None:
    """Until ``count`` entries wait in the batcher's queue (the worker is held, so none is taken meanwhile)."""
    await wait_until_async(lambda: b._queue.qsize() == count, lambda: f"{count} queued, not {b._queue.qsize()}")


async def cancelled(task: asyncio.Future[int]) -> None:
    """Cancel a waiter and let its cancellation land (the ticket is marked abandoned as it does)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def batcher(run: Recorder, size: int = 4, wait_ms: float = 50) -> Iterator[MicroBatcher[int, int]]:
    b: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=size, batch_wait_s=wait_ms / 1000)
    yield b
    b.close(5)


async def test_concurrent_runs_are_batched(recorder: Recorder) -> None:
    for b in batcher(recorder, size=8, wait_ms=200):
        results = await asyncio.gather(*(b.run(i) for i in range(5)))
        assert results == [0, 10, 20, 30, 40]
        assert recorder.batches == [[0, 1, 2, 3, 4]]
        assert recorder.threads != {threading.current_thread().name}  # off the event loop's thread


async def test_batches_are_bounded_in_size(recorder: Recorder) -> None:
    for b in batcher(recorder, size=4, wait_ms=200):
        assert await b.run_many(list(range(10))) == [i * 10 for i in range(10)]
        assert [len(x) for x in recorder.batches] == [4, 4, 2]


async def test_wait_is_bounded(recorder: Recorder) -> None:
    for b in batcher(recorder, size=64, wait_ms=30):
        started = time.perf_counter()
        assert await b.run(7) == 70
        assert time.perf_counter() - started < 1.0
        assert recorder.batches == [[7]]


async def test_a_failing_batch_fails_only_its_requests() -> None:
    recorder = Recorder(fail_on={3})
    for b in batcher(recorder, size=8, wait_ms=100):
        first = await asyncio.gather(*(b.run(i) for i in (1, 2, 3)), return_exceptions=True)
        assert all(isinstance(e, InferenceFailed) for e in first)
        assert isinstance(first[0].__cause__, RuntimeError)
        assert first[0] is not first[1]  # each waiter gets its own error
        assert await asyncio.gather(*(b.run(i) for i in (4, 5))) == [40, 50]


async def test_per_item_errors_stay_with_their_item(recorder: Recorder) -> None:
    for b in batcher(recorder, size=8, wait_ms=100):
        results = await asyncio.gather(b.run(1), b.run(-1), b.run(2), return_exceptions=True)
        assert results[0] == 10 and results[2] == 20
        assert isinstance(results[1], InvalidRequest)


async def test_cancelled_requests_are_dropped_before_their_batch_forms() -> None:
    hold = threading.Event()
    recorder = Recorder(hold=hold)
    for b in batcher(recorder, size=8, wait_ms=50):
        busy = asyncio.ensure_future(b.run(0))  # occupies the worker until `hold` is set
        await asyncio.to_thread(recorder.holding.wait, 5)
        gone = asyncio.ensure_future(b.run(1))
        kept = asyncio.ensure_future(b.run(2))
        await until_queued(b, 2)
        await cancelled(gone)
        hold.set()
        assert await busy == 0 and await kept == 20
        assert recorder.batches == [[0], [2]]


def test_works_from_several_event_loops(recorder: Recorder) -> None:
    for b in batcher(recorder, size=8, wait_ms=10):
        assert asyncio.run(b.run(1)) == 10
        assert asyncio.run(b.run(2)) == 20


async def test_closed_batcher_refuses_work(recorder: Recorder) -> None:
    b: MicroBatcher[int, int] = MicroBatcher(recorder, max_batch_size=2, batch_wait_s=0.01)
    assert await b.run(1) == 10
    await asyncio.to_thread(b.close)
    with pytest.raises(Unavailable):
        await b.run(2)


async def test_a_running_batch_admits_what_arrived_up_to_its_size() -> None:
    hold = threading.Event()
    recorder = Recorder(hold=hold, admit=True)
    for b in batcher(recorder, size=3, wait_ms=10):
        first = asyncio.ensure_future(b.run(0))
        await asyncio.to_thread(recorder.holding.wait, 5)  # the batch [0] is running
        later = [asyncio.ensure_future(b.run(i)) for i in (1, 2, 3)]
        gone = asyncio.ensure_future(b.run(4))
        await until_queued(b, 4)
        await cancelled(gone)
        hold.set()
        assert await first == 0
        assert await asyncio.gather(*later) == [10, 20, 30]
        # 1 and 2 joined the running batch; 3 found it full and ran next; 4 was cancelled while queued
        assert recorder.admitted[0] == [1, 2]
        assert recorder.batches == [[0, 1, 2], [3]]


async def test_admitted_items_are_settled_with_the_batch_and_counted() -> None:
    hold = threading.Event()
    recorder = Recorder(hold=hold, admit=True, fail_on={2})
    sizes: list[int] = []
    b: MicroBatcher[int, int] = MicroBatcher(
        recorder, max_batch_size=4, batch_wait_s=0.01, on_batch=lambda size, _s: sizes.append(size)
    )
    try:
        first = asyncio.ensure_future(b.run(1))
        await asyncio.to_thread(recorder.holding.wait, 5)
        joined = asyncio.ensure_future(b.run(2))
        await until_queued(b, 1)
        hold.set()
        outcomes = await asyncio.gather(first, joined, return_exceptions=True)
        assert all(isinstance(o, InferenceFailed) for o in outcomes)  # the admitted item failed the batch
        assert sizes == [2]
    finally:
        await asyncio.to_thread(b.close, 5)


async def test_close_during_a_batch_finishes_it_and_everything_queued() -> None:
    hold = threading.Event()
    recorder = Recorder(hold=hold, admit=True)
    b: MicroBatcher[int, int] = MicroBatcher(recorder, max_batch_size=2, batch_wait_s=0.01)
    first = asyncio.ensure_future(b.run(1))
    await asyncio.to_thread(recorder.holding.wait, 5)
    queued = [asyncio.ensure_future(b.run(i)) for i in (2, 3)]
    await until_queued(b, 2)
    closing = asyncio.ensure_future(asyncio.to_thread(b.close, 5))
    await until_queued(b, 3)  # and the stop marker behind them
    hold.set()
    await closing
    assert await first == 10 and await asyncio.gather(*queued) == [20, 30]
    assert recorder.batches == [[1, 2], [3]]


async def test_a_batch_answers_its_items_early_but_the_last_one_at_its_end() -> None:
    """``Batch.settle`` wakes a waiter before the batch ends; the batch's own answer for it is ignored, and the
    last unanswered item waits for the batch's end, after the batch is counted."""
    sizes: list[int] = []
    seen_early: list[int] = []
    release = threading.Event()

    def run(batch: Batch[int, int]) -> Sequence[int | BaseException]:
        batch.settle(0, 111)  # early, while the second item still runs
        release.wait(5)
        batch.settle(1, 222)  # the last unanswered: left to the batch's end
        seen_early.append(len(sizes))
        return [0, 20]  # the batch's own answers: ignored for the first item, used for the second

    b: MicroBatcher[int, int] = MicroBatcher(
        run, max_batch_size=2, batch_wait_s=0.05, on_batch=lambda n, _s: sizes.append(n)
    )
    try:
        first, second = asyncio.ensure_future(b.run(1)), asyncio.ensure_future(b.run(2))
        assert await asyncio.wait_for(first, 5) == 111
        assert not second.done() and sizes == []  # answered before its batch ended
        release.set()
        assert await asyncio.wait_for(second, 5) == 20
        assert sizes == [2] and seen_early == [0]
    finally:
        await asyncio.to_thread(b.close, 5)
