"""Micro-batching: requests that arrive close together run as one batch on a dedicated worker thread.

A batch closes when it holds ``max_batch_size`` items or when its first item has waited ``batch_wait``
seconds, whichever comes first. While it runs, the batch function may ``admit`` items that arrived since, up
to the same bound: the engine takes them in while it is still encoding images, the part of a request that
runs one at a time anyway, so that they share the decoding that follows. Inference never runs on an event
loop, and the scheduler belongs to no loop: callers on any loop (or thread) await ``concurrent.futures``
results.

If the batch function raises, every item of that batch fails with that error (as InferenceFailed unless it is
already one of ours); the next batch runs normally. Items whose caller went away before their batch formed
are dropped from it; during a batch the batch function sees ``Ticket.abandoned``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from runtime.errors import InferenceFailed, RuntimeErrorBase, Unavailable

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass(eq=False)
class Ticket(Generic[ItemT, ResultT]):
    item: ItemT
    future: Future[ResultT] = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)
    enqueued_at: float = field(default_factory=time.perf_counter)
    taken_at: float | None = None  # when a batch took it from the queue


class Batch(Generic[ItemT, ResultT]):
    """The tickets of one batch: those it formed with, then those ``admit`` took in while it ran."""

    def __init__(
        self, tickets: list[Ticket[ItemT, ResultT]], take: Callable[[int], list[Ticket[ItemT, ResultT]]], capacity: int
    ) -> None:
        self.tickets = tickets
        self._take = take
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self.tickets)

    def admit(self) -> list[Ticket[ItemT, ResultT]]:
        """Take the items queued since the batch formed, without waiting, while the batch has room."""
        new = self._take(self._capacity - len(self.tickets)) if len(self.tickets) < self._capacity else []
        self.tickets.extend(new)
        return new

    def settle(self, position: int, outcome: ResultT | BaseException) -> None:
        """Answer ticket ``position`` now, before the batch ends (the batch's own answer for it is then ignored).
        The last unanswered ticket is left to the batch's end, which counts the batch before it answers."""
        ticket = self.tickets[position]
        if all(other.future.done() for other in self.tickets if other is not ticket):
            return
        _answer(ticket, outcome)


# Per ticket of the batch (admitted ones included, in order): its result, or the error for that ticket alone.
BatchFunction = Callable[[Batch[ItemT, ResultT]], Sequence[ResultT | BaseException]]
BatchObserver = Callable[[int, float], None]  # (batch size, seconds) after each batch

_STOP = object()


class MicroBatcher(Generic[ItemT, ResultT]):
    def __init__(
        self,
        run_batch: BatchFunction[ItemT, ResultT],
        *,
        max_batch_size: int,
        batch_wait_s: float,
        name: str = "inference",
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._on_batch = on_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._lock = threading.Lock()  # makes a group of submissions contiguous in the queue
        self._closed = False
        self._stop_seen = False  # only the worker thread reads and writes it
        self._thread = threading.Thread(target=self._work, name=f"{name}-worker", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[ItemT]) -> list[Ticket[ItemT, ResultT]]:
        """Queue ``items`` together (they join the same batch when it has room); thread-safe."""
        tickets: list[Ticket[ItemT, ResultT]] = [Ticket(item) for item in items]
        with self._lock:
            if self._closed:
                raise Unavailable("the model is shutting down; retry on another instance", retry_after=1)
            for ticket in tickets:
                self._queue.put(ticket)
        return tickets

    async def run(self, item: ItemT) -> ResultT:
        return await wait(self.submit([item])[0])

    async def run_many(self, items: Sequence[ItemT]) -> list[ResultT]:
        tickets = self.submit(items)
        return list(await asyncio.gather(*(wait(ticket) for ticket in tickets)))

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued work, then stop the worker (blocking; call it off the event loop)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _work(self) -> None:
        while not self._stop_seen:
            tickets = self._collect()
            if tickets:
                self._execute(Batch(tickets, self._take_waiting, self.max_batch_size))

    def _collect(self) -> list[Ticket[ItemT, ResultT]]:
        batch: list[Ticket[ItemT, ResultT]] = []
        deadline: float | None = None
        while len(batch) < self.max_batch_size:
            if deadline is None:
                entry = self._queue.get()
            else:
                remaining = deadline - time.monotonic()
                try:
                    entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
            if self._accept(entry, batch) and deadline is None:
                deadline = time.monotonic() + self.batch_wait_s
            if self._stop_seen:
                break
        return batch

    def _take_waiting(self, room: int) -> list[Ticket[ItemT, ResultT]]:
        taken: list[Ticket[ItemT, ResultT]] = []
        while len(taken) < room and not self._stop_seen:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            self._accept(entry, taken)
        return taken

    def _accept(self, entry: object, batch: list[Ticket[ItemT, ResultT]]) -> bool:
        """Append a queue entry to ``batch`` if it is a live ticket; notes the stop marker."""
        if entry is _STOP:
            self._stop_seen = True  # the worker ends after the batch in hand; nothing is queued behind the marker
            return False
        assert isinstance(entry, Ticket)
        # False when the caller cancelled before the batch took it; the ticket is then dropped.
        if entry.abandoned.is_set() or not entry.future.set_running_or_notify_cancel():
            return False
        entry.taken_at = time.perf_counter()
        batch.append(entry)
        return True

    def _execute(self, batch: Batch[ItemT, ResultT]) -> None:
        started = time.perf_counter()
        try:
            outcomes = self._run_batch(batch)
            if len(outcomes) != len(batch):
                raise InferenceFailed(f"the batch returned {len(outcomes)} results for {len(batch)} requests")
        except Exception as exc:
            log.exception("a batch of %d failed", len(batch))
            outcomes = [_failure(exc) for _ in batch.tickets]
        # Observed before the last waiter wakes, so a caller who waits for every request of a batch also sees it
        # counted (requests the batch answered early, through ``Batch.settle``, may wake before).
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)
        for ticket, outcome in zip(batch.tickets, outcomes, strict=True):
            _answer(ticket, outcome)


def _answer(ticket: Ticket[ItemT, ResultT], outcome: ResultT | BaseException) -> None:
    """Set the ticket's result or error, unless it has one already (answered early, or cancelled)."""
    if ticket.future.done():
        return
    if isinstance(outcome, BaseException):
        ticket.future.set_exception(outcome)
    else:
        ticket.future.set_result(outcome)


def _failure(exc: Exception) -> RuntimeErrorBase:
    """A fresh error per waiter (each raise grows its own traceback), InferenceFailed unless it is ours."""
    if isinstance(exc, RuntimeErrorBase):
        error = type(exc)(exc.message, param=exc.param, retry_after=exc.retry_after)
    else:
        error = InferenceFailed(f"inference failed ({type(exc).__name__}: {exc}); the next request may succeed")
    error.__cause__ = exc
    return error


async def wait(ticket: Ticket[ItemT, ResultT]) -> ResultT:
    """Await a ticket from any event loop; cancelling the waiter marks the ticket abandoned."""
    try:
        return await asyncio.wrap_future(ticket.future)
    except asyncio.CancelledError:
        ticket.abandoned.set()
        raise
