"""What the server says back: redirects, error messages, log lines and metric labels never carry client input
unbounded or unescaped.

- A trailing slash is not redirected to a URL built from the Host header (the client's to choose).
- Error messages quote client input cut to a bounded length.
- A log line cannot be split into lines that pass for records of their own.
- Metric labels come from closed sets: a made-up method adds no series.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening_procs import ServerProcess
from hardening_server import completion_body
from live_server import LiveServer, call
from waiting import wait_until

COMPLETIONS = "/v1/chat/completions"
MiB = 1024 * 1024
MAX_ERROR_BODY = 2000  # a message quotes at most ~80 characters of input; the rest is ours


@pytest.mark.parametrize("path", [COMPLETIONS + "/", "/v1/models/", "/healthz/"])
def test_a_trailing_slash_is_not_redirected_to_the_host_header(tiny_server: LiveServer, path: str) -> None:
    method = "POST" if path.startswith(COMPLETIONS) else "GET"
    body = json.dumps(completion_body()).encode() if method == "POST" else None
    headers = {"Host": "attacker.invalid", "Content-Type": "application/json"}
    reply = call(tiny_server.url, method, path, body=body, headers=headers)
    assert reply.status == 404, reply.headers
    assert "location" not in reply.headers
    assert b"attacker.invalid" not in reply.body
    assert path.rstrip("/") in reply.error["message"]  # it names the route that was meant


@pytest.mark.parametrize(
    ("name", "request_kwargs"),
    [
        ("1 MB model", {"json_body": completion_body(model="m" * MiB)}),
        ("1 MB content type", {"body": b"{}", "headers": {"Content-Type": "application/" + "x" * 60_000}}),
        ("1 MB unknown task tag", {"json_body": completion_body(text="<" + "T" * MiB + ">")}),
        ("1 MB image URL scheme", {"json_body": completion_body(url="x" * MiB + ":abc")}),
    ],
)
def test_error_messages_quote_input_within_a_bound(tiny_server: LiveServer, name: str, request_kwargs: dict) -> None:
    reply = call(tiny_server.url, "POST", COMPLETIONS, **request_kwargs)
    assert 400 <= reply.status < 500, reply.body[:300]
    assert len(reply.body) < MAX_ERROR_BODY, f"{name}: {len(reply.body)} bytes: {reply.body[:300]!r}"
    assert reply.error["message"]


@pytest.mark.parametrize("method", ["PURGE", "PROPFIND", "MKCOL", "LINK"])
def test_a_made_up_method_adds_no_metric_series(tiny_server: LiveServer, method: str) -> None:
    before = _requests_with_method(tiny_server, "other")
    reply = call(tiny_server.url, method, "/v1/models")
    assert reply.status == 405
    assert reply.error["code"] == "method_not_allowed"
    metrics = call(tiny_server.url, "GET", "/metrics").body.decode()
    assert f'method="{method}"' not in metrics
    assert _requests_with_method(tiny_server, "other") == before + 1  # counted, under the closed set's "other"


def _requests_with_method(server: LiveServer, method: str) -> float:
    lines = call(server.url, "GET", "/metrics").body.decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("florence_http_requests_total{") and f'method="{method}"' in line
    )


# --- log lines, from a server process writing the log as deployed (formatted, secrets scrubbed) ---

RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
FORGED = "ERROR runtime.server.errors [0] forged line"


@pytest.fixture(scope="module")
def logging_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("forged-log") / "server.log"
    with ServerProcess.fake_engine({}, log_path) as server:
        yield server


def test_a_log_line_cannot_be_forged(logging_server: ServerProcess) -> None:
    """Field names, paths and headers holding line breaks stay inside the record that logs them: every line of the
    log starts a record or continues one (indented), and none starts with the forged text."""
    body = completion_body(**{f"x\n{FORGED}": 1, f"y\r\n{FORGED}": 2, f"z\u2028{FORGED}": 3})
    assert call(logging_server.url, "POST", COMPLETIONS, json_body=body).status == 200
    assert call(logging_server.url, "GET", f"/no-such%0A{FORGED.replace(' ', '%20')}").status == 404
    log = _wait_for_log(logging_server, "ignoring request fields")
    lines = log.splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    strays = [line for line in lines if not RECORD_START.match(line) and not line.startswith((" ", "\t"))]
    assert not strays, strays[:5]
    assert "'x\\x0aERROR runtime" in log  # the name is there, escaped, inside its record


def _wait_for_log(server: ServerProcess, text: str, timeout_s: float = 10.0) -> str:
    wait_until(lambda: text in server.log(), lambda: f"{text!r} to be logged:\n{server.log()[-2000:]}", timeout_s)
    return server.log()


def test_the_log_check_catches_a_forged_line(tmp_path: Path) -> None:
    """Negative control: the check above fails on a log that holds a line written by a field name."""
    log = f"2026-01-01 00:00:00,000 INFO runtime.binding.request [r] ignoring request fields: 'x\n{FORGED}'\n"
    lines = log.splitlines()
    assert [line for line in lines if line.startswith(FORGED)]
    assert [line for line in lines if not RECORD_START.match(line) and not line.startswith((" ", "\t"))]
