"""SIGTERM under load, the server as its own process on the fake engine.

Admitted requests (running or queued) finish; requests that arrive during the drain get 503 with Retry-After and
``Connection: close``; the process exits within the drain timeout. Requests still running at the deadline are
answered 503 too, not dropped.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from hardening_procs import ServerProcess
from hardening_server import completion_body
from live_server import Reply, call
from waiting import wait_until

# Each test starts a server process and waits out a drain (seconds of it by design).
pytestmark = pytest.mark.slow

COMPLETIONS = "/v1/chat/completions"


def _env(tmp_path: Path, drain_timeout_s: int) -> dict[str, str]:
    return {
        "FLORENCE_MAX_CONCURRENT": "4",
        "FLORENCE_MAX_QUEUED": "32",
        "FLORENCE_DRAIN_TIMEOUT_S": str(drain_timeout_s),
        "FLORENCE_INVOCATION_TIMEOUT_S": "120",
        "FLORENCE_FUNCTIONS_DIR": str(tmp_path),
    }


def _admitted(server: ServerProcess) -> float:
    lines = call(server.url, "GET", "/metrics").body.decode().splitlines()
    wanted = ("florence_requests_in_flight ", "florence_requests_queued ")
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(wanted))


def _start(pool: ThreadPoolExecutor, server: ServerProcess, count: int) -> list[Future[Reply]]:
    futures = [
        pool.submit(call, server.url, "POST", COMPLETIONS, json_body=completion_body(), timeout_s=120)
        for _ in range(count)
    ]
    wait_until(lambda: _admitted(server) >= count, lambda: f"{count} requests admitted, not {_admitted(server)}")
    return futures


def _assert_refused_while_draining(reply: Reply) -> None:
    assert reply.status == 503 and reply.error["code"] == "unavailable", reply.body[:300]
    assert reply.headers["retry-after"].isdigit() and reply.headers["connection"] == "close"


@pytest.mark.timeout(120)
def test_sigterm_drains_admitted_requests_and_refuses_new_ones(tmp_path: Path) -> None:
    drain_timeout_s = 20
    admitted = 20  # 4 running, 16 queued; at 0.5 s each, the drain needs some 2.5 s
    with ServerProcess.fake_engine(_env(tmp_path, drain_timeout_s), tmp_path / "server.log", delay_s=0.5) as server:
        with ThreadPoolExecutor(max_workers=admitted) as pool:
            futures = _start(pool, server, admitted)
            signalled = time.monotonic()
            server.terminate()
            wait_until(lambda: "draining" in server.log(), "the server to start draining")
            during = [call(server.url, "POST", COMPLETIONS, json_body=completion_body()) for _ in range(10)]
            readiness = call(server.url, "GET", "/readyz")
            liveness = call(server.url, "GET", "/healthz")
            replies = [future.result(60) for future in futures]
        code = server.wait(drain_timeout_s + 10)
        exited_after = time.monotonic() - signalled
        log = server.log()
    assert [reply.status for reply in replies] == [200] * admitted
    for reply in during:
        _assert_refused_while_draining(reply)
    assert readiness.status == 503 and liveness.status == 200
    assert code in (0, -signal.SIGTERM)
    assert exited_after < drain_timeout_s, exited_after  # it left as soon as the admitted work was done
    with pytest.raises(OSError):
        call(server.url, "GET", "/healthz", timeout_s=2)
    assert f"draining {admitted} admitted requests" in log and "Traceback" not in log
    print(f"\n{admitted} admitted requests finished, {len(during)} refused with 503, exit after {exited_after:.1f} s")


@pytest.mark.timeout(120)
def test_requests_past_the_drain_deadline_are_answered_503(tmp_path: Path) -> None:
    drain_timeout_s = 2
    with ServerProcess.fake_engine(_env(tmp_path, drain_timeout_s), tmp_path / "server.log", delay_s=60) as server:
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = _start(pool, server, 3)
            signalled = time.monotonic()
            server.terminate()
            replies = [future.result(30) for future in futures]
            answered_after = time.monotonic() - signalled
        code = server.wait(10)
        exited_after = time.monotonic() - signalled
        log = server.log()
    for reply in replies:
        assert reply.status == 503 and reply.headers["retry-after"].isdigit(), reply.body[:300]
        assert "shut down before this request finished" in reply.error["message"]
    assert drain_timeout_s - 0.5 <= answered_after < drain_timeout_s + 3
    assert code in (0, -signal.SIGTERM) and exited_after < drain_timeout_s + 5
    assert "ran past the drain timeout" in log and "Traceback" not in log
