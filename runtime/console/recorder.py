"""Records each function invocation for the console: status, duration, request id and its log lines.

Placed inside the request-id middleware (the id is known) and outside the error envelope (the status is the one the
client got). The duration ends with the response's last byte; the log lines include the function's
``ctx.wait_until`` work, which runs after it.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.console.history import InvocationHistory, RequestLogCapture
from runtime.functions.secrets import SECRETS
from runtime.server.http_metrics import CLIENT_CLOSED
from runtime.server.request_id import SCOPE_KEY as REQUEST_ID_KEY
from runtime.server.routes import FUNCTION_KEY


class InvocationRecorderMiddleware:
    def __init__(self, app: ASGIApp, history: InvocationHistory, capture: RequestLogCapture) -> None:
        self.app = app
        self.history = history
        self.capture = capture

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.time()
        started = time.perf_counter()
        status = CLIENT_CLOSED
        answered: float | None = None

        async def recording_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = time.perf_counter()
            await send(message)

        with self.capture.capturing() as lines:
            try:
                await self.app(scope, receive, recording_send)
            except BaseException:
                if status == CLIENT_CLOSED:
                    status = 500  # uvicorn answers what escapes with a 500
                raise
            finally:
                function = scope.get(FUNCTION_KEY)
                if function is not None:
                    self.history.add(
                        function=function,
                        method=scope["method"],
                        path=SECRETS.redact(scope["path"]),
                        query=SECRETS.redact(scope.get("query_string", b"").decode("latin-1")),
                        status=status,
                        duration_ms=round(((answered or time.perf_counter()) - started) * 1000, 1),
                        request_id=str(scope.get(REQUEST_ID_KEY, "-")),
                        started_at=started_at,
                        logs=tuple(lines),
                    )
