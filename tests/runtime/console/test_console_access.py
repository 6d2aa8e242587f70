"""Who sees the console, and what it shows: on only at a loopback address unless FLORENCE_CONSOLE says otherwise,
addressed by a loopback host name, with a strict Content-Security-Policy, answering while the model loads, and never
holding a secret value. Over real HTTP, on the fake engine."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import SECRET, fake_settings
from fakes import FakeEngine
from live_server import LiveServer, call

from runtime.config import ServerSettings, Settings, SettingsError
from runtime.console.access import console_enabled, host_of, is_loopback_host
from runtime.console.routes import CONTENT_SECURITY_POLICY
from runtime.server.services import Services

STATIC = Path(__file__).resolve().parents[3] / "runtime" / "console" / "static"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("header", "host"),
    [("127.0.0.1:8000", "127.0.0.1"), ("[::1]:8000", "[::1]"), ("localhost", "localhost"), ("::1", "::1")],
)
def test_host_of_a_host_header(header: str, host: str) -> None:
    assert host_of(header) == host


@pytest.mark.parametrize(
    ("host", "setting", "enabled"),
    [
        ("127.0.0.1", None, True),
        ("::1", None, True),
        ("0.0.0.0", None, False),
        ("10.0.0.5", None, False),
        ("0.0.0.0", True, True),
        ("127.0.0.1", False, False),
    ],
)
def test_console_is_on_by_default_only_on_loopback(host: str, setting: bool | None, enabled: bool) -> None:
    assert console_enabled(ServerSettings(host=host, console=setting)) is enabled


@pytest.mark.parametrize(("text", "value"), [("auto", None), ("", None), ("1", True), ("on", True), ("0", False)])
def test_the_console_setting(text: str, value: bool | None) -> None:
    assert Settings.from_env({"FLORENCE_CONSOLE": text}).server.console is value


def test_a_bad_console_setting_is_a_startup_error() -> None:
    with pytest.raises(SettingsError, match="FLORENCE_CONSOLE"):
        Settings.from_env({"FLORENCE_CONSOLE": "sometimes"})


def _server(functions_dir: Path, **server: object) -> LiveServer:
    engine = FakeEngine(random_weights=True)
    return LiveServer(Services(fake_settings(functions_dir, **server), engine_loader=lambda path, options: engine))


@pytest.fixture(scope="module")
def server(functions_dir: Path) -> Iterator[LiveServer]:
    with _server(functions_dir) as live:
        yield live


def test_the_page_carries_a_strict_content_security_policy(server: LiveServer) -> None:
    reply = call(server.url, "GET", "/_console/")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    policy = reply.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe" not in policy
    assert reply.headers["x-content-type-options"] == "nosniff"
    for name in ("main.js", "console.css"):
        asset = call(server.url, "GET", f"/_console/static/{name}")
        assert asset.status == 200 and asset.headers["content-security-policy"] == policy


def test_the_page_has_no_inline_code_and_loads_nothing_from_elsewhere() -> None:
    """What the policy forbids, the page does not do (the browser tests fail on any violation it logs)."""
    for path in STATIC.iterdir():
        text = path.read_text()
        if path.suffix == ".html":
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
            assert not re.search(r"\son[a-z]+=", text), path.name
            assert "<style" not in text
        assert not re.search(r"\sstyle=", text), path.name
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path.name
        assert "innerHTML" not in text and "eval(" not in text, path.name
        if path.suffix == ".js":
            assert not re.search(r"from \"(https?:)?//", text), path.name


def test_console_without_a_slash_redirects(server: LiveServer) -> None:
    reply = call(server.url, "GET", "/_console", headers={"Host": "attacker.invalid"})
    assert reply.status == 308 and reply.headers["location"] == "/_console/"  # a fixed path, not built from Host


def test_unknown_console_files_are_404(server: LiveServer) -> None:
    for path in ("/_console/static/nope.js", "/_console/static/..%2F..%2Fconfig.py", "/_console/static/__init__.py"):
        reply = call(server.url, "GET", path)
        assert reply.status == 404 and reply.error["code"] == "not_found", path


def test_a_foreign_host_name_is_refused(server: LiveServer) -> None:
    """A site that rebinds its own name to 127.0.0.1 cannot read the console through the visitor's browser."""
    reply = call(server.url, "GET", "/_console/api/overview", headers={"Host": f"evil.example:{server.port}"})
    assert reply.status == 404
    assert "loopback" in reply.error["message"] and "FLORENCE_CONSOLE=1" in reply.error["message"]
    assert call(server.url, "GET", "/_console/api/overview", headers={"Host": "localhost"}).status == 200


def test_the_overview_lists_models_functions_and_tasks_without_secrets(server: LiveServer) -> None:
    reply = call(server.url, "GET", "/_console/api/overview")
    overview = reply.json()
    assert overview["state"] == "ready"
    (model,) = overview["models"]
    assert model["folder"] == "/models/fake" and model["random_weights"] is True
    assert "microsoft/Florence-2-large" in model["ids"] and model["load_s"] is not None
    assert {"chatty", "quiet", "raising"} <= {fn["name"] for fn in overview["functions"]}
    tags = {task["tag"]: task for task in overview["tasks"]}
    assert tags["<OD>"]["input"] == "none" and not tags["<OD>"]["text"]
    assert tags["<CAPTION>"]["text"] and tags["<REGION_TO_CATEGORY>"]["input"] == "region"
    assert "<REGION_TO_OCR>" not in tags
    assert SECRET not in reply.body.decode()


def test_off_when_listening_elsewhere_and_on_when_asked(functions_dir: Path) -> None:
    with _server(functions_dir, host="0.0.0.0") as live:
        reply = call(live.url, "GET", "/_console/")
        assert reply.status == 404 and "FLORENCE_CONSOLE=1" in reply.error["message"]
        assert call(live.url, "GET", "/chatty").status == 200  # a function of that name-space still works
    with _server(functions_dir, host="0.0.0.0", console=True) as live:
        # Turned on by hand: any host name may read it (the server is meant to be reached from elsewhere).
        reply = call(live.url, "GET", "/_console/api/overview", headers={"Host": "devbox.internal:8000"})
        assert reply.status == 200


def test_the_console_answers_while_the_model_loads(functions_dir: Path) -> None:
    gate = threading.Event()
    engine = FakeEngine()

    def slow_loader(path: Path, options: object) -> FakeEngine:
        gate.wait(30)
        return engine

    services = Services(fake_settings(functions_dir), engine_loader=slow_loader)
    with LiveServer(services, wait_ready=False) as live:
        try:
            overview = call(live.url, "GET", "/_console/api/overview").json()
            assert overview["state"] == "loading" and overview["models"] == []
            assert overview["configured_models"][0]["folder"] == "/models/fake"
        finally:
            gate.set()


def test_the_live_view_ends_when_the_server_drains(functions_dir: Path) -> None:
    """An open event stream must not hold up the shutdown until the drain timeout."""
    live = _server(functions_dir).start()
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    connection.request("GET", "/_console/api/invocations")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    assert response.readline() == b"retry: 2000\n"
    started = time.monotonic()
    live.stop()
    assert live.stopped and time.monotonic() - started < 4
    connection.close()


def _events_until(
    server: LiveServer, request_id: str, headers: dict[str, str] | None = None
) -> list[dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/_console/api/invocations", headers=headers or {})
    response = connection.getresponse()
    events: list[dict[str, object]] = []
    while not events or events[-1]["request_id"] != request_id:
        line = response.readline().decode()
        if line.startswith("data: "):
            events.append(json.loads(line[6:]))
    connection.close()
    return events


def test_invocation_events_carry_no_secret(server: LiveServer) -> None:
    assert call(server.url, "GET", "/raising").status == 500
    assert call(server.url, "GET", "/chatty?word=x", headers={"X-Request-Id": "no-secret"}).status == 200
    events = _events_until(server, "no-secret")
    raising = next(event for event in events if event["function"] == "raising")
    assert raising["status"] == 500
    text = json.dumps(events)
    assert "ValueError: broken on purpose [redacted]" in text
    assert SECRET not in text


def test_a_reconnecting_page_resumes_after_the_last_event_it_saw(server: LiveServer) -> None:
    assert call(server.url, "GET", "/chatty?word=one", headers={"X-Request-Id": "resume-one"}).status == 200
    seen = _events_until(server, "resume-one")[-1]["seq"]
    assert call(server.url, "GET", "/chatty?word=two", headers={"X-Request-Id": "resume-two"}).status == 200
    resumed = _events_until(server, "resume-two", {"Last-Event-ID": str(seen)})
    assert [event["request_id"] for event in resumed] == ["resume-two"]
    # An id the server never gave (it restarted and counts from 1 again): everything it has.
    everything = _events_until(server, "resume-two", {"Last-Event-ID": str(int(str(seen)) + 1000)})
    assert everything[0]["seq"] == 1 and len(everything) > 2
