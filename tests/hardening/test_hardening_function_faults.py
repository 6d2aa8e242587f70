"""Edge functions that misbehave: each one's failure stays its own request's, and the server carries on.

Over real HTTP, on the fake engine (the model is not the point), with a 2 s invocation limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from fakes import FakeEngine
from hardening_server import completion_body, tiny_settings
from live_server import LiveServer, Reply, call, write_functions
from waiting import wait_until

from runtime.server.services import Services

TIMEOUT_S = 2.0
MiB = 1024 * 1024
LEAK_MIB = 40  # above glibc's largest mmap threshold (32 MiB): each block goes back to the system when freed

FUNCTIONS = {
    "hello.py": "async def fetch(request, env, ctx):\n    return {'hello': 'world'}\n",
    "raises.py": "async def fetch(request, env, ctx):\n    raise ValueError('broken on purpose')\n",
    "raises_in_thread.py": "def fetch(request, env, ctx):\n    raise KeyError('sync and broken')\n",
    "hangs.py": "import asyncio\nasync def fetch(request, env, ctx):\n    await asyncio.sleep(3600)\n",
    "hangs_in_thread.py": "import time\ndef fetch(request, env, ctx):\n    time.sleep(4)\n    return 'too late'\n",
    "hangs_at_import.py": "import time\ntime.sleep(4)\nasync def fetch(request, env, ctx):\n    return 'never'\n",
    "syntax_error.py": "def fetch(request, env, ctx) return 1\n",
    "no_fetch.py": "def handler(request):\n    return 'wrong name'\n",
    "exits.py": "async def fetch(request, env, ctx):\n    raise SystemExit(3)\n",
    "recurses.py": "def fetch(request, env, ctx):\n    return fetch(request, env, ctx)\n",
    "returns_object.py": "async def fetch(request, env, ctx):\n    return object()\n",
    "returns_bad_json.py": "async def fetch(request, env, ctx):\n    return {'x': float('nan'), 'y': object()}\n",
    "blocks_loop.py": "import pathlib\nimport time\nasync def fetch(request, env, ctx):\n"
    "    pathlib.Path(request.query_params['started']).touch()\n    time.sleep(1.5)\n    return 'blocked'\n",
    "leaks.py": f"HOARD = []\nMIB = {LEAK_MIB}\nasync def fetch(request, env, ctx):\n"
    "    HOARD.append(b'x' * (MIB << 20))\n    return {'held_mib': len(HOARD) * MIB}\n",
    "ai_bad_payload.py": "async def fetch(request, env, ctx):\n"
    "    return await AI.run('microsoft-florence-2-large', {})\n",
    "ai_unknown_model.py": "async def fetch(request, env, ctx):\n    return await AI.run('nope', {})\n",
}


@pytest.fixture(scope="module")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_functions(tmp_path_factory.mktemp("faulty-functions"), FUNCTIONS)


@pytest.fixture(scope="module")
def server(functions_dir: Path) -> Iterator[LiveServer]:
    settings = tiny_settings(functions_dir, Path("/models/fake"), invocation_timeout_s=TIMEOUT_S)
    engine = FakeEngine(max_new_tokens=16)
    with LiveServer(Services(settings, engine_loader=lambda path, options: engine)) as live:
        yield live


def assert_still_serving(server: LiveServer) -> None:
    assert call(server.url, "GET", "/hello").json() == {"hello": "world"}
    assert call(server.url, "GET", "/readyz").status == 200
    assert call(server.url, "POST", "/v1/chat/completions", json_body=completion_body()).status == 200


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "status", "code", "says"),
    [
        ("raises", 500, "function_error", "ValueError: broken on purpose"),
        ("raises_in_thread", 500, "function_error", "KeyError"),
        ("hangs", 408, "timeout", "time limit of 2 s"),
        ("hangs_in_thread", 408, "timeout", "time limit of 2 s"),
        ("hangs_at_import", 408, "timeout", "to import"),
        ("syntax_error", 500, "function_error", "SyntaxError"),
        ("no_fetch", 500, "function_error", "defines no fetch"),
        ("exits", 500, "function_error", "SystemExit"),
        ("recurses", 500, "function_error", "RecursionError"),
        ("returns_object", 500, "function_error", "returned a object"),
        ("returns_bad_json", 500, "function_error", "not JSON-serialisable"),
        ("ai_bad_payload", 400, "invalid_payload", "messages"),
        ("ai_unknown_model", 404, "model_not_found", "unknown model 'nope'"),
    ],
)
def test_a_failing_function_fails_its_own_request(
    server: LiveServer, name: str, status: int, code: str, says: str
) -> None:
    started = time.monotonic()
    reply = call(server.url, "GET", f"/{name}")
    assert reply.status == status and reply.error["code"] == code, reply.body[:300]
    assert says in reply.error["message"] and reply.headers["x-request-id"]
    assert time.monotonic() - started < TIMEOUT_S + 2
    assert_still_serving(server)


def test_a_fixed_function_is_picked_up(server: LiveServer, functions_dir: Path) -> None:
    path = functions_dir / "syntax_error.py"
    assert call(server.url, "GET", "/syntax_error").status == 500
    path.write_text("def fetch(request, env, ctx):\n    return 'fixed'\n")
    try:
        assert call(server.url, "GET", "/syntax_error").body == b"fixed"
    finally:
        path.write_text(FUNCTIONS["syntax_error.py"])


@pytest.mark.timeout(60)
def test_a_function_blocking_the_event_loop_is_survived_and_reported(
    server: LiveServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    replies: dict[str, Reply] = {}
    started_file = tmp_path / "started"
    path = f"/blocks_loop?started={started_file}"
    blocker = threading.Thread(target=lambda: replies.update(blocked=call(server.url, "GET", path)))
    with caplog.at_level(logging.WARNING, logger="runtime.server.loop_monitor"):
        blocker.start()
        wait_until(started_file.exists, "the function to start blocking the event loop")
        started = time.monotonic()
        health = call(server.url, "GET", "/healthz")
        waited = time.monotonic() - started
        blocker.join(10)
        server.wait_for_loop_monitor()
    assert replies["blocked"].status == 200 and replies["blocked"].body == b"blocked"
    assert health.status == 200 and waited > 0.5  # everyone waits while the loop is blocked: it is reported
    assert any("event loop was blocked" in record.getMessage() for record in caplog.records)
    metrics = call(server.url, "GET", "/metrics").body.decode()
    over_one_second = _count(metrics, "florence_event_loop_lag_seconds_count") - _count(
        metrics, 'florence_event_loop_lag_seconds_bucket{le="1.0"}'
    )
    assert over_one_second >= 1
    assert_still_serving(server)


def _count(metrics: str, series: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(series + " "))


@pytest.mark.timeout(60)
def test_a_leaking_function_gives_its_memory_back_when_replaced(server: LiveServer, functions_dir: Path) -> None:
    process = psutil.Process()
    path = functions_dir / "leaks.py"

    def leak_five_times(held_mib: int = 0) -> int:
        before = process.memory_info().rss
        for calls in range(1, 6):
            assert call(server.url, "GET", "/leaks").json() == {"held_mib": held_mib + calls * LEAK_MIB}
        leaked = process.memory_info().rss - before
        assert leaked >= 4 * LEAK_MIB * MiB, leaked / MiB
        return before

    def held_since(before: int) -> float:
        return (process.memory_info().rss - before) / MiB

    try:
        before = leak_five_times()
        path.write_text(FUNCTIONS["leaks.py"] + "# edited: a new version, with fresh module state\n")
        assert call(server.url, "GET", "/leaks").json() == {"held_mib": LEAK_MIB}  # the old module's hoard is gone
        assert held_since(before) <= 2 * LEAK_MIB, f"{held_since(before):.0f} MiB still held after a reload"
        before = leak_five_times(held_mib=LEAK_MIB)
        path.write_text("def fetch(request, env, ctx) broken\n")  # an edit that breaks it frees the old one too
        assert call(server.url, "GET", "/leaks").status == 500
        assert held_since(before) <= LEAK_MIB, f"{held_since(before):.0f} MiB still held after a broken edit"
    finally:
        path.write_text(FUNCTIONS["leaks.py"])
    assert_still_serving(server)
