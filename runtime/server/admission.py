"""Concurrency and backpressure: at most N requests run, M wait; beyond that 429, and 503 while not ready.

Only work routes (completions and functions) are admitted here; health, readiness, metrics, the model list and
the console always answer (``metered`` in runtime/route_table.py).

A request's body is read before it takes a slot or a place in the queue, within ``FLORENCE_BODY_TIMEOUT_S``: a
client that declares a large body and sends it a byte at a time holds a connection, not one of the N slots that
serve everyone (it gets a 408 when its time is up). At most N + M requests receive their body at once (so that
the bodies held in memory stay bounded); more are answered 429 at once.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.config import Limits
from runtime.errors import Overloaded, RequestTimeout, Unavailable
from runtime.route_table import is_metered
from runtime.server.errors import error_response
from runtime.server.metrics import Metrics
from runtime.server.state import ServerState

log = logging.getLogger(__name__)

BODY_TIMEOUT_SETTING = "FLORENCE_BODY_TIMEOUT_S"


class ClientLeft(Exception):
    """The client disconnected before its body was complete: there is no one to answer."""


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, limits: Limits, state: ServerState, metrics: Metrics) -> None:
        self.app = app
        self.limits = limits
        self.state = state
        self.metrics = metrics
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._queued = 0
        self._receiving = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_metered(scope["path"]):
            await self.app(scope, receive, send)
            return
        retry = self.limits.retry_after_s
        if not self.state.accepting:
            error = Unavailable(f"{self.state.not_ready_reason()}; retry shortly", retry_after=retry)
            response = error_response(error, self.metrics)
            if self.state.draining:  # the client should reconnect elsewhere
                response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        if self._receiving >= self.limits.max_concurrent + self.limits.max_queued or self._full():
            await error_response(self._overloaded(), self.metrics)(scope, receive, send)
            return
        self.state.active += 1
        try:
            try:
                body = await self._read_body(receive)
            except ClientLeft:
                return
            except TimeoutError:
                error = RequestTimeout(
                    f"the request body did not arrive within {self.limits.body_timeout_s:g} s "
                    f"({BODY_TIMEOUT_SETTING}); send it in one go"
                )
                response = error_response(error, self.metrics)
                response.headers["Connection"] = "close"  # the rest of the body may still be on its way
                await response(scope, receive, send)
                return
            if self._full():
                await error_response(self._overloaded(), self.metrics)(scope, receive, send)
                return
            await self._queue_then_run(scope, _replay(body, receive), send)
        finally:
            self.state.active -= 1

    def _full(self) -> bool:
        return self._slots.locked() and self._queued >= self.limits.max_queued

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"the server is at capacity ({self.limits.max_concurrent} running, {self._queued} queued); "
            "retry after the Retry-After delay",
            retry_after=self.limits.retry_after_s,
        )

    async def _read_body(self, receive: Receive) -> Message:
        """The whole body as one message, read within the body time limit."""
        self._receiving += 1
        self.metrics.receiving.inc()
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                chunks: list[bytes] = []
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientLeft
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        finally:
            self._receiving -= 1
            self.metrics.receiving.dec()

    async def _queue_then_run(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._queued += 1
        self.metrics.queue_depth.inc()
        try:
            async with asyncio.timeout(self.limits.invocation_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            error = Overloaded(
                "waited too long for a free slot; retry after the Retry-After delay",
                retry_after=self.limits.retry_after_s,
            )
            await error_response(error, self.metrics)(scope, receive, send)
            return
        finally:
            self._queued -= 1
            self.metrics.queue_depth.dec()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.in_flight.dec()
            self._slots.release()


def _replay(body: Message, receive: Receive) -> Receive:
    """The body read ahead, then the connection's own receive (which waits for the client to leave)."""
    pending: list[Message] = [body]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
