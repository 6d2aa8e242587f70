"""How long a request's work lives: until its client goes away, or until the server's drain deadline.

uvicorn does not cancel a request whose client disconnected; without this middleware a completion whose caller
hung up keeps its concurrency slot and its place in a batch until the model is done with it. Here the request's
task is cancelled as soon as the disconnect arrives, so the engine drops it at its next decoder step.

The disconnect is listened for once the app has read the whole body (until then the app's own reads see it), or at
once for a request without a body. Listening stops when the response is complete: ``ctx.wait_until`` work runs
after the response and must not be cut short by a client that leaves. A body the app never reads (a function that
ignores it) is never listened past, so such a request runs to its end.

At the end of the drain timeout uvicorn cancels the requests still running; they are answered 503 with
Retry-After (when no byte of their response has gone yet) instead of uvicorn's plain-text 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import Unavailable
from runtime.server.errors import error_response
from runtime.server.metrics import Metrics
from runtime.server.state import ServerState

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 1.0  # answering a request cut short by the drain deadline: the process is about to exit


class RequestLifetimeMiddleware:
    def __init__(self, app: ASGIApp, state: ServerState, metrics: Metrics, retry_after_s: float) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        self.state.requests.add(task)
        watch = _ClientWatch(task, receive)
        if not _has_body(scope):
            await watch.read_empty_body()
        try:
            await self.app(scope, watch.receive, watch.send_through(send))
        except asyncio.CancelledError:
            if watch.cancelled_request and task.uncancel() == 0:
                log.info("the client disconnected; its request was cancelled")
                self.metrics.cancelled.inc()
                return
            if self.state.draining and not watch.response_started:
                log.warning("the request ran past the drain timeout and was cancelled; answered 503")
                task.uncancel()
                error = Unavailable(
                    "the server shut down before this request finished; retry it", retry_after=self.retry_after_s
                )
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    async with asyncio.timeout(SEND_TIMEOUT_S):
                        await error_response(error, self.metrics)(scope, receive, send)
                return
            raise
        finally:
            watch.stop()
            self.state.requests.discard(task)


def _has_body(scope: Scope) -> bool:
    headers = Headers(scope=scope)
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


class _ClientWatch:
    def __init__(self, task: asyncio.Task[None], receive: Receive) -> None:
        self._task = task
        self._receive = receive
        self._pending: Message | None = None  # the empty body of a bodiless request, read before the app asks
        self._body_read = False
        self._gone = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.response_started = False
        self._response_done = False
        self.cancelled_request = False

    async def read_empty_body(self) -> None:
        """For a request without a body the whole request has arrived: listen from now on."""
        self._pending = await self._receive()
        self._body_done()

    async def receive(self) -> Message:
        if self._pending is not None:
            message, self._pending = self._pending, None
            return message
        if self._body_read:  # the listener owns the connection's receive now; it says when the client leaves
            await self._gone.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._client_left()
            await asyncio.sleep(0)  # the cancellation lands here, before the app mistakes it for an error
        elif not message.get("more_body", False):
            self._body_done()
        return message

    def send_through(self, send: Send) -> Send:
        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.response_started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self._response_done = True  # before the send: the client may close as soon as it has the end
            await send(message)

        return watched_send

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()

    def _body_done(self) -> None:
        self._body_read = True
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._client_left()

    def _client_left(self) -> None:
        self._gone.set()
        if not self._response_done and not self.cancelled_request:
            self.cancelled_request = True
            self._task.cancel()
