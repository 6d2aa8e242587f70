"""The server's routes, written once: path, methods, metrics label, whether admission meters them, their OpenAPI
operation. Starlette routes (``runtime.openai.router``, ``runtime.server.routes``, the console), admission
(``runtime.server.admission``), metrics labels, the names a function may not take
(``runtime.functions.discovery``) and the ``/openapi.json`` paths (``runtime.server.openapi``) are derived from it.

It imports nothing of the runtime, so the HTTP packages (``openai``, ``server``, ``console``) all import it and
none has to import another for a path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The scope key under which a request's metrics label travels from its endpoint to the metrics middleware.
ROUTE_KEY = "florence.route"
ALL_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class RouteSpec:
    path: str
    methods: tuple[str, ...]
    metered: bool  # takes a concurrency slot (admission); routes that must answer under load or while loading do not
    operation_id: str | None = None  # described in /openapi.json under this operation id; None: not part of the API
    summary: str = ""
    prefix: bool = False  # the path and everything under it (a Mount)

    @property
    def label(self) -> str:
        """The metrics label: the path itself, a closed set (never the raw request path)."""
        return self.path

    @property
    def first_segment(self) -> str:
        return self.path.strip("/").split("/", 1)[0]

    def covers(self, path: str) -> bool:
        return path == self.path or (self.prefix and path.startswith(self.path + "/"))


COMPLETIONS = RouteSpec(
    "/v1/chat/completions",
    ("POST",),
    metered=True,
    operation_id="createChatCompletion",
    summary="Run one Florence-2 task on one image",
)
MODELS = RouteSpec(
    "/v1/models",
    ("GET",),
    metered=False,
    operation_id="listModels",
    summary="The loaded models, under every id they answer to",
)
HEALTHZ = RouteSpec(
    "/healthz", ("GET",), metered=False, operation_id="healthz", summary="Liveness: the process serves HTTP"
)
READYZ = RouteSpec(
    "/readyz",
    ("GET",),
    metered=False,
    operation_id="readyz",
    summary="Readiness: every model is loaded and warm, and the server is not draining",
)
METRICS = RouteSpec("/metrics", ("GET",), metered=False, operation_id="metrics", summary="Prometheus metrics")
OPENAPI = RouteSpec("/openapi.json", ("GET",), metered=False, operation_id="openapi", summary="This document")
# The console is a page for people at the machine, not part of the API; its live view is a stream that stays open,
# so it must not take a slot, and it answers while loading.
CONSOLE = RouteSpec("/_console", ("GET",), metered=False, prefix=True)

FIXED_ROUTES: tuple[RouteSpec, ...] = (COMPLETIONS, MODELS, HEALTHZ, READYZ, METRICS, OPENAPI, CONSOLE)
DOCUMENTED_ROUTES: tuple[RouteSpec, ...] = tuple(spec for spec in FIXED_ROUTES if spec.operation_id)

# Edge functions own every other path: ``/<name>`` and everything under it, metered, labelled by function.
FUNCTION_PATHS: tuple[str, ...] = ("/{name}", "/{name}/{rest:path}")
# A function of one of these names could never be reached.
RESERVED_NAMES: frozenset[str] = frozenset(spec.first_segment for spec in FIXED_ROUTES)


def function_label(name: str) -> str:
    """The metrics label of an existing function (an unknown name gets none: it must not add a series)."""
    return f"/{name}"


def is_metered(path: str) -> bool:
    """Whether a request for ``path`` takes a concurrency slot: functions and completions do."""
    return not any(spec.covers(path) and not spec.metered for spec in FIXED_ROUTES)


def labelled(label: str, endpoint: Endpoint) -> Endpoint:
    """``endpoint``, recording ``label`` for the metrics middleware."""

    async def handler(request: Request) -> Response:
        request.scope[ROUTE_KEY] = label
        return await endpoint(request)

    return handler


def route(spec: RouteSpec, endpoint: Endpoint, path: str | None = None, methods: Sequence[str] | None = None) -> Route:
    """The Starlette route of ``spec``: its path and methods, and its metrics label set before ``endpoint`` runs.

    ``path`` is for routes inside a Mount at ``spec.path`` (relative to it); they share the spec's label.
    """
    return Route(path or spec.path, labelled(spec.label, endpoint), methods=list(methods or spec.methods))
