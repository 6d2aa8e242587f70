"""Running the app under uvicorn, with a graceful shutdown: drain, stop listening, then close the sessions.

On SIGTERM or SIGINT /readyz says 503 at once, and the admitted requests (running or queued, with their
wait_until work) get up to ``FLORENCE_DRAIN_TIMEOUT_S`` to finish. Meanwhile the listener stays open and every
new work request is answered 503 with Retry-After and ``Connection: close``, so clients and load balancers learn
to go elsewhere instead of meeting a refused connection. Once the admitted requests are done (or the deadline is
reached) uvicorn closes the listener; what still runs at the deadline is cancelled and answered 503
(runtime.server.lifetime). Then the lifespan closes the models and the image fetcher, and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator
from types import FrameType

import uvicorn

from runtime.server.app import create_app
from runtime.server.protocol import http_protocol
from runtime.server.services import Services
from runtime.server.state import ServerState

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.05


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain phase before its shutdown; the drain timeout is the config's
    ``timeout_graceful_shutdown``, shared between the drain and uvicorn's own wait."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.draining = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            # uvicorn raises each captured signal again once it has shut down, so the process would die of a
            # SIGTERM it has just handled (exit 143, which make and supervisors report as a failure). A drained
            # SIGTERM is the normal way to stop a server: it exits 0. SIGINT is raised again (Ctrl+C stays 130).
            self._captured_signals = [sig for sig in self._captured_signals if sig != signal.SIGTERM]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._state.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.timeout_graceful_shutdown or 0)
        if self._state.active:
            log.info("draining %d admitted requests; new requests are answered 503", self._state.active)
        # Polled, not awaited on an event: a second signal (force_exit) must end the wait too.
        while self._state.active and loop.time() < deadline and not self.force_exit:  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL_S)
        # What is left of the drain timeout goes to uvicorn's own wait; then it cancels what still runs.
        self.config.timeout_graceful_shutdown = max(0, round(deadline - loop.time()))
        await super().shutdown(sockets)


def build_server(services: Services) -> DrainingServer:
    server = services.settings.server
    config = uvicorn.Config(
        create_app(services),
        host=server.host,
        port=server.port,
        log_config=None,  # runtime.server.logs configures logging (request ids, secret scrubbing)
        # The asyncio loop and h11 (runtime.server.protocol) whatever else is installed: the ray extra brings uvloop
        # and httptools, which uvicorn would otherwise pick, and the server's behaviour must not change with extras.
        loop="asyncio",
        http=http_protocol(services.settings.limits.header_timeout_s),
        timeout_graceful_shutdown=int(max(1, round(server.drain_timeout_s))),
        lifespan="on",
    )
    draining = DrainingServer(config, services.state)

    def stop() -> None:
        draining.should_exit = True

    services.on_load_failure = stop
    return draining
