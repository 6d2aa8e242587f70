"""Request bodies over the limit are refused: at once when Content-Length says so, else while they stream in.

Refused with a lingering close, as nginx does: the 413 is sent at once, then up to ``LINGER_MAX_BYTES`` of the
body still on its way are read and dropped (for at most ``LINGER_TIMEOUT_S``) before the connection closes. A
socket closed with unread data answers the client with a reset, which destroys the 413 it has not read yet: a
client that sends its whole body before it reads (Python's urllib) would see ``Connection reset by peer`` instead
of the message. A client that asked ``Expect: 100-continue`` sends no body after a final status: nothing to read.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import PayloadTooLarge
from runtime.server.errors import error_response
from runtime.server.metrics import Metrics

SETTING = "FLORENCE_MAX_BODY_BYTES"
LINGER_MAX_BYTES = 64 * 1024 * 1024
LINGER_TIMEOUT_S = 5.0


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        lingers = headers.get("expect", "").lower() != "100-continue"
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = self._too_large(int(declared))
            linger = lingers and int(declared) <= LINGER_MAX_BYTES
            await answer_then_linger(error_response(error, self.metrics), receive, send, linger=linger)
            return
        received = 0
        over = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise self._too_large(received)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except PayloadTooLarge as exc:
            if not over or started:  # not ours (an image over its limit ...), or too late to answer
                raise
            await answer_then_linger(error_response(exc, self.metrics), receive, send, linger=lingers)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is over {self.max_bytes} bytes ({size} sent), the limit ({SETTING})")


async def answer_then_linger(response: Response, receive: Receive, send: Send, *, linger: bool) -> None:
    """Send ``response`` whole, read and drop what is left of the request body, then end the response (and,
    with ``Connection: close``, the connection)."""
    response.headers["Connection"] = "close"
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    # The body goes out now; the end of the response waits: uvicorn stops reading the request once it is sent.
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    if linger:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_TIMEOUT_S):
                await _discard_body(receive, LINGER_MAX_BYTES)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _discard_body(receive: Receive, max_bytes: int) -> None:
    dropped = 0
    while dropped <= max_bytes:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
