"""Request bodies over the limit are refused: at once when Content-Length says so, else while they stream in."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import PayloadTooLarge
from runtime.server.errors import error_response
from runtime.server.metrics import Metrics

SETTING = "FLORENCE_MAX_BODY_BYTES"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._too_large(int(declared)), self.metrics)(scope, receive, send)
            return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(received)
            return message

        await self.app(scope, capped_receive, send)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is over {self.max_bytes} bytes ({size} sent), the limit ({SETTING})")
