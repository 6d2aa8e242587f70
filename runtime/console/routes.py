"""``/_console``: the page, its static files, and the JSON and event-stream endpoints the page reads.

A Mount, not routes of the app: the console is a tool for the developer at the machine, not part of the HTTP API
that ``/openapi.json`` describes. Every answer carries a strict Content-Security-Policy (scripts and styles from
this server only, no inline code, no frames) and is never cached. Nothing here holds a secret value: model folders,
function names and routes, and log lines scrubbed like every log line.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from runtime.binding.registry import RegisteredModel
from runtime.console.access import CONSOLE_PREFIX, host_of, is_loopback_host
from runtime.console.history import InvocationHistory
from runtime.errors import NotFound
from runtime.florence2 import TASKS
from runtime.route_table import CONSOLE, labelled, route
from runtime.server.services import Services
from runtime.spec import request_schema

STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        # The picked image is shown from a blob: URL, a pasted one from its own address (the browser fetches it).
        "img-src 'self' data: blob: http: https:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Endpoint = Callable[[Request], Awaitable[Response]]
EVENTS_WAIT_S = 1.0  # how often the live view looks at whether the server is draining
EVENTS_HEARTBEAT_S = 15.0


def console_mount(services: Services, history: InvocationHistory, *, check_host: bool) -> Mount:
    """The console's routes; ``check_host``: answer only requests addressed to a loopback host name."""
    static = _static_files()

    def guarded(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            host = host_of(request.headers.get("host", ""))
            if check_host and not is_loopback_host(host):
                raise NotFound(
                    f"the console answers only at a loopback address (http://127.0.0.1:<port>{CONSOLE_PREFIX}/), "
                    f"not at host {host!r}; set FLORENCE_CONSOLE=1 to serve it at any address"
                )
            response: Response = await handler(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        return labelled(CONSOLE.label, endpoint)

    async def page(request: Request) -> Response:
        return Response(static["index.html"], media_type="text/html")

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            raise NotFound(f"the console has no file {name!r}")
        return Response(static[name], media_type=STATIC_TYPES[_suffix(name)])

    async def overview(request: Request) -> Response:
        return JSONResponse(overview_of(services))

    async def invocations(request: Request) -> Response:
        after = _int(request.query_params.get("after", "0"))
        # A reconnecting EventSource resumes after the last event it saw; after a server restart (numbering starts
        # again) it gets everything.
        resumed = _int(request.headers.get("last-event-id", ""))
        if resumed <= history.last_seq:
            after = max(after, resumed)
        return StreamingResponse(
            _invocation_events(services, history, after),
            media_type="text/event-stream",
            headers={"X-Accel-Buffering": "no"},
        )

    return Mount(
        CONSOLE.path,
        routes=[
            Route("/", guarded(page), methods=["GET"]),
            Route("/static/{name}", guarded(static_file), methods=["GET"]),
            Route("/api/overview", guarded(overview), methods=["GET"]),
            Route("/api/invocations", guarded(invocations), methods=["GET"]),
        ],
    )


def console_entry() -> Route:
    """``/_console`` without its slash: a redirect to the fixed path ``/_console/``, never built from the request's
    ``Host`` (the server's own trailing-slash redirects are off for that reason)."""

    async def entry(request: Request) -> Response:
        return RedirectResponse(CONSOLE_PREFIX + "/", status_code=308)

    return route(CONSOLE, entry)


def console_off_mount() -> Mount:
    """What ``/_console`` answers when the console is off: a 404 that says how to turn it on."""

    async def off(request: Request) -> Response:
        raise NotFound(
            "the console is off: the server does not listen on a loopback address; "
            "set FLORENCE_CONSOLE=1 to serve it anyway (whoever reaches the server sees its functions' logs)"
        )

    return Mount(CONSOLE.path, routes=[route(CONSOLE, off, path="/{rest:path}")])


async def _invocation_events(services: Services, history: InvocationHistory, after: int) -> AsyncIterator[str]:
    """Every recorded invocation after ``after``, then each new one as it happens, until the server drains (an
    open stream must not hold up the shutdown) or the page goes away (Starlette then cancels this)."""
    yield "retry: 2000\n\n"
    last_sent = asyncio.get_running_loop().time()
    while not services.state.draining:
        fresh = await history.wait_for_more(after, EVENTS_WAIT_S)
        for record in fresh:
            after = record.seq
            yield f"id: {record.seq}\nevent: invocation\ndata: {json.dumps(record.to_json())}\n\n"
        now = asyncio.get_running_loop().time()
        if fresh:
            last_sent = now
        elif now - last_sent >= EVENTS_HEARTBEAT_S:
            last_sent = now
            yield ": keep-alive\n\n"


def overview_of(services: Services) -> dict[str, Any]:
    """What the page shows besides invocations: server state, models, functions, tasks and request bounds."""
    state = services.state
    limits = services.settings.limits
    return {
        "state": _state_name(services),
        "state_detail": None if state.accepting else state.not_ready_reason(),
        "models": [_model(model) for model in services.registry.models()],
        "configured_models": [{"ids": list(spec.ids), "folder": str(spec.path)} for spec in services.settings.models],
        "functions": [{"name": name, "routes": [f"/{name}", f"/{name}/*"]} for name in services.runner.names()],
        "tasks": [
            {
                "tag": task.tag,
                "input": str(task.input_kind),
                "text": task.is_text,  # a text answer: streamed token by token
                "parse_type": str(task.parse_type),
            }
            for task in TASKS.values()
            if task.tag in accepted_tags()
        ],
        "limits": {"max_tokens": limits.max_new_tokens, "num_beams": limits.max_num_beams},
    }


def _state_name(services: Services) -> str:
    state = services.state
    if state.draining:
        return "draining"
    if state.ready:
        return "ready"
    return "failed" if state.load_error else "loading"


def _model(model: RegisteredModel) -> dict[str, Any]:
    info = model.engine.info
    return {
        "ids": list(model.ids),
        "name": info.name,
        "folder": info.path,
        "variant": info.variant,
        "graph_variants": dict(info.graph_variants),
        "backend": _backend(),
        "providers": list(info.providers),
        "load_s": model.load_s,
        "random_weights": info.random_weights,
    }


def _backend() -> str:
    try:
        return f"ONNX Runtime {version('onnxruntime')}"
    except PackageNotFoundError:
        try:
            return f"ONNX Runtime {version('onnxruntime-gpu')}"
        except PackageNotFoundError:
            return "ONNX Runtime"


_TAG_NAME = re.compile(r"[A-Z][A-Z_]+")


def accepted_tags() -> frozenset[str]:
    """The task tags the request schema accepts (``<REGION_TO_OCR>`` is known to the engine but not offered)."""
    names = set(_TAG_NAME.findall(json.dumps(request_schema())))
    return frozenset(tag for tag in TASKS if tag.strip("<>") in names)


def _static_files() -> dict[str, bytes]:
    folder = resources.files(__package__).joinpath("static")
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and _suffix(entry.name) in STATIC_TYPES
    }


def _suffix(name: str) -> str:
    return name[name.rfind(".") :] if "." in name else ""


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0
