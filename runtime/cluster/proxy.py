"""Middleware for Ray Serve's HTTP proxy, so that a response through Ray carries one ``X-Request-Id``.

Serve's proxy always appends its own ``X-Request-ID`` (the caller's id, or one it made up and passed on to the
ingress, which echoes it): without this, every response would carry the header twice. The first one is the
ingress's, which is the server's contract (a malformed caller id is replaced there); the proxy's copy goes.

Serve loads it from ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=runtime.cluster.proxy:middlewares`` in the
environment of its nodes: ``serve_on_ray`` sets it for the local cluster it starts; a cluster started otherwise
(``ray start``, KubeRay) sets it on its nodes.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.server.request_id import HEADER

_HEADER = HEADER.lower().encode()


def middlewares() -> list[Middleware]:
    return [Middleware(SingleRequestIdMiddleware)]


class SingleRequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_one_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = first_request_id_only(message.get("headers", []))
            await send(message)

        await self.app(scope, receive, send_one_id)


def first_request_id_only(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept: list[tuple[bytes, bytes]] = []
    seen = False
    for name, value in headers:
        if name.lower() == _HEADER:
            if seen:
                continue
            seen = True
        kept.append((name, value))
    return kept
