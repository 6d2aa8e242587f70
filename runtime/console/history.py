"""The last invocations of each function, with the log lines written while each ran (secrets scrubbed).

``RequestLogCapture`` is a logging handler that keeps the lines of the requests being recorded; a request is told
apart by a context variable of its own (not its X-Request-Id, which the caller chooses and may reuse), which
worker threads of sync functions inherit. ``InvocationHistory`` keeps a bounded deque per function and wakes
the console's live view when one is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.functions.secrets import SECRETS

MAX_INVOCATIONS_PER_FUNCTION = 20
MAX_LINES_PER_REQUEST = 200
MAX_LINE_CHARS = 8000
# The access log's line for a request says what the invocation record already does.
SKIPPED_LOGGERS = frozenset({"uvicorn.access"})

_capture_key: ContextVar[int | None] = ContextVar("console_capture_key", default=None)
# One numbering for every capture of the process, so that two servers in one process (tests) never share a key.
_keys = itertools.count(1)


@dataclass(frozen=True)
class LogLine:
    time: float  # seconds since the epoch
    level: str
    logger: str
    message: str


@dataclass(frozen=True)
class InvocationRecord:
    seq: int
    function: str
    method: str
    path: str
    query: str
    status: int
    duration_ms: float
    request_id: str
    started_at: float  # seconds since the epoch
    logs: tuple[LogLine, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLogCapture(logging.Handler):
    """Collects the log records of the requests between ``open`` and ``close`` (bounded per request)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._open: dict[int, list[LogLine]] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def capturing(self) -> Iterator[list[LogLine]]:
        """Inside: the lines logged by this request (its task and the threads it hands work to) go to the list."""
        key = next(_keys)
        lines: list[LogLine] = []
        with self._guard:
            self._open[key] = lines
        token = _capture_key.set(key)
        try:
            yield lines
        finally:
            _capture_key.reset(token)
            with self._guard:
                del self._open[key]

    def emit(self, record: logging.LogRecord) -> None:
        key = _capture_key.get()
        if key is None or record.name in SKIPPED_LOGGERS:
            return
        line = LogLine(record.created, record.levelname, record.name, _message(record))
        with self._guard:
            lines = self._open.get(key)
            if lines is not None and len(lines) < MAX_LINES_PER_REQUEST:
                lines.append(line)


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except (TypeError, ValueError):
        text = str(record.msg)
    if record.exc_info:
        text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + " [...]"
    return SECRETS.redact(text)


@dataclass
class InvocationHistory:
    per_function: int = MAX_INVOCATIONS_PER_FUNCTION
    _by_function: dict[str, deque[InvocationRecord]] = field(default_factory=dict)
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event | None = None

    def add(self, **fields: Any) -> InvocationRecord:
        """Record one invocation; called on the event loop (by the recording middleware)."""
        record = InvocationRecord(seq=next(self._seq), **fields)
        self._by_function.setdefault(record.function, deque(maxlen=self.per_function)).append(record)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return record

    @property
    def last_seq(self) -> int:
        return max((records[-1].seq for records in self._by_function.values() if records), default=0)

    def records(self, after: int = 0) -> list[InvocationRecord]:
        every = (record for records in self._by_function.values() for record in records)
        return sorted((record for record in every if record.seq > after), key=lambda record: record.seq)

    async def wait_for_more(self, after: int, timeout_s: float) -> list[InvocationRecord]:
        """Records newer than ``after``, waiting up to ``timeout_s`` for one (empty when none came)."""
        deadline = time.monotonic() + timeout_s
        while not (fresh := self.records(after)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return []
        return fresh
