"""Faults inside the model, over real HTTP on the tiny model: a session that raises mid-batch, clients that leave.

The decoder's ONNX Runtime session is wrapped (through the engine's ``runner`` seam) by a probe that counts its
runs, can slow each one down, and can raise once, as ONNX Runtime raises.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hardening_server import completion_body, tiny_settings
from live_server import LiveServer, Reply, call
from onnxruntime.capi.onnxruntime_pybind11_state import Fail
from waiting import wait_until

from runtime.engine import EngineSettings, load
from runtime.engine.model import Florence2Engine
from runtime.engine.sessions import DECODER, open_sessions
from runtime.server.services import Services

COMPLETIONS = "/v1/chat/completions"
BATCH = 4
MAX_NEW_TOKENS = 48


class DecoderProbe:
    """Stands in for the decoder's InferenceSession: counts runs, may sleep before each, may raise once."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.runs = 0
        self.delay_s = 0.0
        self.fail_on_run: int | None = None

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        self.runs += 1
        if self.fail_on_run is not None and self.runs >= self.fail_on_run:
            self.fail_on_run = None
            raise Fail("[ONNXRuntimeError] : 1 : FAIL : injected by the test, as a broken kernel would")
        if self.delay_s:  # a slower decoder step, so that a client can leave mid-generation
            time.sleep(self.delay_s)
        return self._session.run(output_names, input_feed, run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@dataclasses.dataclass
class ProbedServer:
    live: LiveServer
    probe: DecoderProbe
    engine: Florence2Engine

    def metric(self, name: str) -> float:
        """The sum of every series of ``name``."""
        lines = call(self.live.url, "GET", "/metrics").body.decode().splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name)


@pytest.fixture(scope="module")
def probed(tiny_model_dir: Path, hardening_functions: Path) -> Iterator[ProbedServer]:
    probes: list[DecoderProbe] = []
    engines: list[Florence2Engine] = []

    def load_probed(path: Path, settings: EngineSettings) -> Florence2Engine:
        sessions = open_sessions(path, settings)
        graph = sessions.graph(DECODER)
        probe = DecoderProbe(graph.session)
        graph.session = probe
        probes.append(probe)
        engines.append(load(path, settings, runner=sessions))
        return engines[-1]

    settings = tiny_settings(hardening_functions, tiny_model_dir, max_new_tokens=MAX_NEW_TOKENS)
    settings = dataclasses.replace(settings, engine=EngineSettings(max_batch_size=BATCH, batch_wait_ms=300))
    with LiveServer(Services(settings, engine_loader=load_probed)) as live:
        yield ProbedServer(live, probes[0], engines[0])


def _request(max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return completion_body(max_tokens=max_tokens, num_beams=1, **extra)


def _concurrently(server: LiveServer, count: int, body: dict[str, Any]) -> list[Reply]:
    replies: list[Reply] = []
    threads = [
        threading.Thread(target=lambda: replies.append(call(server.url, "POST", COMPLETIONS, json_body=body)))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return replies


def _batch_sizes_since(engine: Florence2Engine, start: int, requests: int) -> list[int]:
    """The sizes of the batches since ``start``, once they account for ``requests`` (each is recorded just after
    its answers are handed back)."""
    wait_until(
        lambda: sum(list(engine.recent_batch_sizes)[start:]) >= requests,
        lambda: f"batches for {requests} requests, not {list(engine.recent_batch_sizes)[start:]}",
        5,
    )
    return list(engine.recent_batch_sizes)[start:]


@pytest.mark.timeout(120)
def test_a_session_that_raises_mid_batch_fails_that_batch_only(probed: ProbedServer) -> None:
    batches_before = len(probed.engine.recent_batch_sizes)
    probed.probe.fail_on_run = probed.probe.runs + 3  # the batch's third decoder step
    replies = _concurrently(probed.live, BATCH + 2, _request())
    sizes = _batch_sizes_since(probed.engine, batches_before, len(replies))
    failed = [reply for reply in replies if reply.status == 500]
    assert len(sizes) >= 2 and len(failed) == sizes[0] >= 2, (sizes, [r.status for r in replies])
    assert sorted(reply.status for reply in replies) == [200] * (len(replies) - len(failed)) + [500] * len(failed)
    for reply in failed:
        assert reply.error["code"] == "inference_error" and "injected by the test" in reply.error["message"]
        assert reply.headers["x-request-id"]
    assert len({reply.headers["x-request-id"] for reply in replies}) == len(replies)
    assert call(probed.live.url, "POST", COMPLETIONS, json_body=_request()).status == 200
    assert call(probed.live.url, "GET", "/readyz").status == 200


def _send_and_leave(url: str, body: dict[str, Any], probe: DecoderProbe, wait_for_first_bytes: bool) -> int:
    """Send the request on a raw connection, stay until it has had a few decoder steps (and, for a stream, its
    first bytes), then leave; the decoder steps seen by then."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST {COMPLETIONS} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    runs_before = probe.runs
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(head + payload)
        if wait_for_first_bytes:
            connection.settimeout(30)
            received = b""
            while b"data: " not in received:
                chunk = connection.recv(65536)
                assert chunk, f"the server closed the stream: {received!r}"
                received += chunk
        wait_until(lambda: probe.runs - runs_before >= 4, "four decoder steps of the request")
        return probe.runs - runs_before


def _runs_after(probe: DecoderProbe, seconds: float) -> int:
    before = probe.runs
    time.sleep(seconds)  # an absence of steps is what is measured: there is no event to wait for
    return probe.runs - before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_client_that_leaves_mid_generation_has_its_work_cancelled(probed: ProbedServer, stream: bool) -> None:
    probe = probed.probe
    probe.delay_s = 0.05  # 48 steps: some 2.5 s of generation
    try:
        cancelled = probed.metric("florence_requests_cancelled_total")
        completions = probed.metric("florence_completions_total")
        steps_seen = _send_and_leave(probed.live.url, _request(MAX_NEW_TOKENS, stream=stream), probe, stream)
        assert 4 <= steps_seen < MAX_NEW_TOKENS // 2, steps_seen  # generation had started, and was far from done
        assert _runs_after(probe, 1.0) <= 2, "the decoder kept stepping for a client that left"
        assert probed.metric("florence_requests_cancelled_total") == cancelled + 1
        assert probed.metric("florence_requests_in_flight") == 0
        assert probed.metric("florence_completions_total") == completions
        # Control: a client that stays gets every step.
        runs_before = probe.runs
        reply = call(probed.live.url, "POST", COMPLETIONS, json_body=_request(MAX_NEW_TOKENS, stream=stream))
        assert reply.status == 200 and probe.runs - runs_before >= MAX_NEW_TOKENS - 1
    finally:
        probe.delay_s = 0.0
