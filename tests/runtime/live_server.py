"""A real uvicorn server in a thread of the test process, on a free loopback port, and a small HTTP client."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from waiting import wait_until

from runtime.server.app import create_app
from runtime.server.protocol import http_protocol
from runtime.server.serve import DrainingServer
from runtime.server.services import Services


class LiveServer:
    def __init__(self, services: Services, *, wait_ready: bool = True, drain_timeout_s: int = 5) -> None:
        self.services = services
        self._wait_ready = wait_ready
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(services),
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=drain_timeout_s,
            access_log=False,
            http=http_protocol(services.settings.limits.header_timeout_s),
        )
        self.server = DrainingServer(config, services.state)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> LiveServer:
        self._thread.start()
        wait_until(self._up, "the server to start (and, unless told not to wait, its models to load)", timeout_s)
        return self

    def _up(self) -> bool:
        if self.services.state.load_error:
            raise RuntimeError(f"the models failed to load: {self.services.state.load_error}")
        if not self._thread.is_alive():
            raise RuntimeError("the server thread ended before the server started")
        return self.server.started and (not self._wait_ready or self.services.state.ready)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.handle_exit(15, None)  # as SIGTERM does
        self._thread.join(timeout_s)

    def sample(self, name: str) -> float:
        """A sample of the server's metrics (a gauge, a histogram's ``_count``), read in-process: ``/metrics`` would
        wait behind a blocked event loop."""
        return self.services.metrics.registry.get_sample_value(name) or 0.0

    def wait_for_loop_monitor(self) -> None:
        """Until the event-loop monitor has woken once more: the interval it was timing (which may hold a stall)
        is then in its lag histogram."""
        lag_count = "florence_event_loop_lag_seconds_count"
        seen = self.sample(lag_count)
        wait_until(lambda: self.sample(lag_count) > seen, "the event-loop monitor's next wake-up")

    @property
    def stopped(self) -> bool:
        return not self._thread.is_alive()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        return self.json()["error"]


def call(
    base_url: str,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Reply:
    host_port = base_url.removeprefix("http://")
    connection = http.client.HTTPConnection(host_port, timeout=timeout_s)
    send_headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        send_headers.setdefault("Content-Type", "application/json")
    try:
        chunked = body is not None and not isinstance(body, bytes)  # an iterable: sent with chunked encoding
        connection.request(method, path, body=body, headers=send_headers, encode_chunked=chunked)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def write_functions(folder: Path, files: dict[str, str]) -> Path:
    """A functions folder holding ``files`` (name -> source), for a server under test."""
    for name, code in files.items():
        (folder / name).write_text(code)
    return folder


def metric(base_url: str, name: str) -> float:
    """The value of an unlabelled series on the server's ``/metrics`` (a server in another process)."""
    for line in call(base_url, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


def answers_ready(base_url: str) -> bool:
    """Whether ``/readyz`` says 200 (False while the port is not open yet)."""
    try:
        return call(base_url, "GET", "/readyz", timeout_s=2).status == 200
    except OSError:
        return False
