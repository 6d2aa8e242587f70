"""Concurrency and backpressure: at most N requests run, M wait; beyond that 429, and 503 while not ready.

Only work routes (completions and functions) are admitted here; health, readiness, metrics, the model list and
the console always answer.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.config import Limits
from runtime.console.access import CONSOLE_PREFIX
from runtime.errors import Overloaded, Unavailable
from runtime.server.errors import error_response
from runtime.server.metrics import Metrics
from runtime.server.state import ServerState

UNMETERED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/models", "/openapi.json"})
# The console's page and its live view (a stream that stays open) must not take a slot, and answer while loading.
UNMETERED_PREFIX = CONSOLE_PREFIX + "/"


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, limits: Limits, state: ServerState, metrics: Metrics) -> None:
        self.app = app
        self.limits = limits
        self.state = state
        self.metrics = metrics
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._queued = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNMETERED_PATHS or scope["path"].startswith(UNMETERED_PREFIX):
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
        if self._slots.locked() and self._queued >= self.limits.max_queued:
            error = Overloaded(
                f"the server is at capacity ({self.limits.max_concurrent} running, {self._queued} queued); "
                "retry after the Retry-After delay",
                retry_after=retry,
            )
            await error_response(error, self.metrics)(scope, receive, send)
            return
        self.state.active += 1
        try:
            await self._queue_then_run(scope, receive, send)
        finally:
            self.state.active -= 1

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
