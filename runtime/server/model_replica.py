"""The ``X-Model-Replica`` header: which model replica answered a request (served through Ray).

An engine whose work runs elsewhere notes the replica that answered (``note_replica``); the middleware puts it
on the response. The note is a holder set per request, so a function's ``AI.run`` calls (on the request's task,
or on the loop from a sync function's thread, which inherits the context) all land on their own request. A
request that made several calls names each replica once, in order; one that made none gets no header.
"""

from __future__ import annotations

from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Model-Replica"

_replicas: ContextVar[list[str] | None] = ContextVar("model_replicas", default=None)


def note_replica(name: str) -> None:
    replicas = _replicas.get()
    if replicas is not None and name not in replicas:
        replicas.append(name)


class ModelReplicaMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replicas: list[str] = []
        token = _replicas.set(replicas)

        async def send_with_replica(message: Message) -> None:
            if message["type"] == "http.response.start" and replicas:
                MutableHeaders(scope=message)[HEADER] = ", ".join(replicas)
            await send(message)

        try:
            await self.app(scope, receive, send_with_replica)
        finally:
            _replicas.reset(token)
