"""Every error leaves in the one envelope ``{"error": {"message", "type", "code", "param"}}``.

``ErrorEnvelopeMiddleware`` catches what escapes the routes (our errors, and anything unforeseen, which is a
500 logged with its traceback); Starlette's own 404/405 go through ``http_exception_handler``.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import InvalidRequest, MethodNotAllowed, NotFound, RuntimeErrorBase, translate
from runtime.functions.secrets import SECRETS
from runtime.server.metrics import Metrics
from runtime.untrusted import quote

log = logging.getLogger(__name__)


def error_response(error: RuntimeErrorBase, metrics: Metrics | None = None) -> JSONResponse:
    if metrics is not None:
        metrics.errors.labels(error.code).inc()
    body = error.to_dict()
    body["error"]["message"] = SECRETS.redact(body["error"]["message"])
    return JSONResponse(body, status_code=error.status, headers=error.headers())


def as_runtime_error(exc: BaseException) -> RuntimeErrorBase:
    error = translate(exc, stage="invocation")
    if not isinstance(exc, RuntimeErrorBase):
        log.error("unhandled error (a bug):\n%s", SECRETS.redact("".join(traceback.format_exception(exc))))
    elif error.status >= 500:
        log.error("%s: %s", error.code, SECRETS.redact(error.message))
    return error


def make_http_exception_handler(metrics: Metrics) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.scope["path"]  # not request.url, which parses the Host header (the client's to choose)
        if exc.status_code == 404:
            error: RuntimeErrorBase = NotFound(f"no route for {quote(path)}; {_route_hint(request.app, path)}")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{quote(request.method, 20)} is not allowed on {quote(path)}")
        else:  # Starlette raises no other HTTPException on its own; a route's 4xx is the caller's, 5xx ours
            error = InvalidRequest(str(exc.detail)) if exc.status_code < 500 else RuntimeErrorBase(str(exc.detail))
        response = error_response(error, metrics)
        response.headers.update(exc.headers or {})  # Starlette's 405 names the allowed methods in Allow
        return response

    return handler


def _route_hint(app: Any, path: str) -> str:
    """Where a path with a trailing slash meant to go. Said, not redirected to: Starlette's redirect names the
    Host header's server, which the client chose."""
    exact = {route.path for route in app.router.routes if isinstance(route, Route) and "{" not in route.path}
    wanted = path.rstrip("/")
    if path != wanted and wanted in exact:
        return f"did you mean {wanted} (without the trailing slash)?"
    return "see GET /v1/models or a function path"


class ErrorEnvelopeMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the one place where every error becomes an answer
            error = as_runtime_error(exc)
            if started:  # the status line is gone; all we can do is end the response
                log.error("error after the response started: %s", SECRETS.redact(error.message))
                raise
            await error_response(error, self.metrics)(scope, receive, send)
