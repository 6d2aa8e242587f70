"""Counts and times every HTTP request by route template (not raw path: unknown paths must not add series)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.route_table import ROUTE_KEY
from runtime.server.metrics import Metrics

UNMATCHED = "unmatched"
# Label values come from closed sets: a method the client made up must not add a series per spelling.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
CLIENT_CLOSED = 499  # no response: the client left first (nginx's "client closed request")


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_CLOSED

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except BaseException:
            if status == CLIENT_CLOSED:
                status = 500  # uvicorn answers what escapes with a 500
            raise
        finally:
            route = str(scope.get(ROUTE_KEY, UNMATCHED))
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
