"""uvicorn's HTTP/1.1 protocol with a time limit on the request head, and its parse errors in our envelope.

uvicorn bounds the idle time between requests of a kept-alive connection, but not the time a client takes to send a
request line and headers: a client that opens connections and sends a byte now and then keeps each one forever.
Here the head must be complete within ``FLORENCE_HEADER_TIMEOUT_S`` of the connection opening (or of the previous
response on a kept-alive connection); past it the connection is closed, as nginx's ``client_header_timeout`` does.
The body's own time limit is the admission's (runtime.server.admission), where the request has a request id and
can be answered.

A request line or header that the parser refuses (not HTTP), or a head longer than ``MAX_HEAD_BYTES``, is answered
400 in the one error envelope, with a fresh request id, instead of uvicorn's plain text. h11 bounds only a head it
is still waiting for; one that arrives whole in a single read would pass at any length, so the bound is counted
here, whatever way the bytes arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from runtime.errors import InvalidRequest
from runtime.server.request_id import HEADER as REQUEST_ID_HEADER

log = logging.getLogger(__name__)

HEADER_TIMEOUT_SETTING = "FLORENCE_HEADER_TIMEOUT_S"
MAX_HEAD_BYTES = 16 * 1024  # request line and headers, as h11 allows an incomplete head; nginx reads 8 KiB lines
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")  # h11 also takes bare line feeds
BAD_REQUEST_MESSAGE = (
    "the request line or headers could not be parsed: malformed, or longer than the server reads; "
    "send a well-formed HTTP/1.1 request with a shorter path and headers"
)


def http_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: h11 always, so that parsing does not change with the
    extras installed (the ray extra brings httptools, which uvicorn would otherwise pick)."""

    class HeadTimedProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _waiting_since_cycle: Any = None  # the request cycle that was current when the wait for a head began
        _head_bytes: int | None = None  # bytes of the awaited head so far; None once its end was seen
        _head_tail = b""  # the last bytes read, in case the head's end spans two reads

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._wait_for_head()

        def data_received(self, data: bytes) -> None:
            if self._head_too_long(data):
                self.send_400_response("request head too long")
                return
            super().data_received(data)
            if self._head_timer is not None and self.cycle is not self._waiting_since_cycle:
                self._stop_head_timer()  # a new request's head is complete: its cycle exists

        def on_response_complete(self) -> None:
            before = self.cycle
            super().on_response_complete()
            if self.cycle is before:  # no pipelined request started inside: the next head is awaited
                self._wait_for_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._stop_head_timer()
            error = InvalidRequest(BAD_REQUEST_MESSAGE)
            body = json.dumps(error.to_dict()).encode()
            head = (
                "HTTP/1.1 400 Bad Request\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(body)}\r\n"
                f"{REQUEST_ID_HEADER.lower()}: {uuid.uuid4().hex}\r\n"
                "connection: close\r\n\r\n"
            )
            self.transport.write(head.encode("ascii") + body)
            self.transport.close()

        def _head_too_long(self, data: bytes) -> bool:
            if self._head_bytes is None:
                return False
            window = self._head_tail + data
            ends = [(i + len(mark)) for mark in _HEAD_ENDS if (i := window.find(mark)) != -1]
            if not ends:
                self._head_bytes += len(data)
                self._head_tail = window[-3:]
                return self._head_bytes > MAX_HEAD_BYTES
            head = self._head_bytes + min(ends) - len(self._head_tail)
            self._head_bytes, self._head_tail = None, b""
            return head > MAX_HEAD_BYTES

        def _wait_for_head(self) -> None:
            self._head_bytes, self._head_tail = 0, b""
            if self.transport.is_closing():
                return
            self._stop_head_timer()
            self._waiting_since_cycle = self.cycle
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.cycle is self._waiting_since_cycle and not self.transport.is_closing():
                log.info(
                    "closed a connection whose request head did not arrive within %g s (%s)",
                    header_timeout_s,
                    HEADER_TIMEOUT_SETTING,
                )
                self.transport.close()

    return HeadTimedProtocol
