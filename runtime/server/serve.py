"""Running the app under uvicorn, with a graceful shutdown: stop accepting, drain, then close the sessions.

On SIGTERM or SIGINT uvicorn closes its listening sockets and waits up to ``FLORENCE_DRAIN_TIMEOUT_S`` for
in-flight requests (and their wait_until work); requests still arriving on open connections get 503, and
/readyz says 503 from the first signal on. Then the lifespan closes the models and the image fetcher.
"""

from __future__ import annotations

from types import FrameType

import uvicorn

from runtime.server.app import create_app
from runtime.server.services import Services
from runtime.server.state import ServerState


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._state.draining = True
        super().handle_exit(sig, frame)


def build_server(services: Services) -> DrainingServer:
    server = services.settings.server
    config = uvicorn.Config(
        create_app(services),
        host=server.host,
        port=server.port,
        log_config=None,  # runtime.server.logs configures logging (request ids, secret scrubbing)
        timeout_graceful_shutdown=int(max(1, round(server.drain_timeout_s))),
        lifespan="on",
    )
    draining = DrainingServer(config, services.state)

    def stop() -> None:
        draining.should_exit = True

    services.on_load_failure = stop
    return draining
