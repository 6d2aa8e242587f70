"""Health, readiness, metrics, and the catch-all function routes (``/<name>`` and every path under it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from runtime.errors import Unavailable
from runtime.functions.discovery import find_function
from runtime.functions.runner import FunctionRunner
from runtime.route_table import (
    ALL_METHODS,
    FUNCTION_PATHS,
    HEALTHZ,
    METRICS,
    READYZ,
    RESERVED_NAMES,
    ROUTE_KEY,
    function_label,
    route,
)
from runtime.server.errors import error_response
from runtime.server.metrics import CONTENT_TYPE, Metrics
from runtime.server.request_id import request_id_of
from runtime.server.state import ServerState

# The function a request invoked, for those that record invocations (the console's history).
FUNCTION_KEY = "florence.function"


def health_routes(state: ServerState, metrics: Metrics, retry_after_s: float) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reason = await state.unready_reason()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return error_response(Unavailable(reason, retry_after=retry_after_s))

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return [route(HEALTHZ, healthz), route(READYZ, readyz), route(METRICS, metrics_endpoint)]


def function_routes(runner: FunctionRunner, wait_until_timeout_s: float) -> list[Route]:
    async def function(request: Request) -> Response:
        name = request.path_params["name"]
        if find_function(runner.functions_dir, name) is not None:
            request.scope[ROUTE_KEY] = function_label(name)
            request.scope[FUNCTION_KEY] = name
        invocation = await runner.invoke(name, request, request_id_of(request))
        return invocation.response_then_pending(wait_until_timeout_s)

    return [FunctionRoute(path, function, methods=list(ALL_METHODS)) for path in FUNCTION_PATHS]


class FunctionRoute(Route):
    """Never claims the server's own prefixes, so ``GET /v1/chat/completions`` is a 405, not a function call."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and child.get("path_params", {}).get("name") in RESERVED_NAMES:
            return Match.NONE, {}
        return match, child
