"""Server logging: data: URLs cut to their scheme, media type and length, as sent or percent-encoded; and logging
configured inside a process that outlives the server (a test run): records go to the stderr of the moment, never to
a stream swapped out and closed since, and the configuration can be undone."""

from __future__ import annotations

import base64
import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest

from runtime.server.logs import RedactingFilter, RedactingStream, configure_logging, shorten_data_urls

REPO = Path(__file__).resolve().parents[3]


def test_records_go_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", first)
    undo = configure_logging("info")
    try:
        monkeypatch.setattr(sys, "stderr", second)  # as a harness swaps in the next test's capture
        first.close()
        logging.getLogger("late.server").warning("logged after its stream was closed")
    finally:
        undo()
    assert "logged after its stream was closed" in second.getvalue()
    assert "Logging error" not in second.getvalue()


def test_undo_leaves_logging_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn_handler = logging.NullHandler()
    uvicorn.addHandler(uvicorn_handler)
    try:
        undo = configure_logging("debug")
        assert isinstance(sys.stderr, RedactingStream) and root.level == logging.DEBUG
        assert len(root.handlers) == len(handlers) + 1 and uvicorn_handler not in uvicorn.handlers
        undo()
        assert sys.stdout is stdout and sys.stderr is stderr
        assert root.handlers == handlers and root.level == level
        assert uvicorn_handler in uvicorn.handlers
    finally:
        uvicorn.removeHandler(uvicorn_handler)


LATE_LOGGING_TESTS = """
    import logging
    import threading

    from runtime.server.logs import configure_logging

    go = threading.Event()
    late: list[threading.Thread] = []


    def test_a_server_configures_logging_and_keeps_running(capsys):
        configure_logging("info")  # as `python -m runtime serve` does, and nothing undoes it
        thread = threading.Thread(target=lambda: (go.wait(30), logging.getLogger("server").warning("late line")))
        thread.start()
        late.append(thread)


    def test_the_next_test_sees_no_logging_error(capsys):
        go.set()
        late[0].join(30)
        err = capsys.readouterr().err
        assert "late line" in err
        assert "Logging error" not in err and "Traceback" not in err, err
"""


@pytest.mark.timeout(120)
def test_a_server_logging_after_its_test_does_not_pollute_the_next(tmp_path: Path) -> None:
    """Under pytest itself: the first test's captured stderr is closed when the server thread logs."""
    (tmp_path / "test_late_logging.py").write_text(textwrap.dedent(LATE_LOGGING_TESTS))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_late_logging.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]


PAYLOAD = base64.b64encode(bytes(range(256)) * 8).decode()  # 2732 characters


def test_a_data_url_is_logged_as_its_media_type_and_length() -> None:
    line = f'127.0.0.1:5 - "POST /caption?url=data:image/png;base64,{PAYLOAD}&max_tokens=4 HTTP/1.1" 200'
    assert shorten_data_urls(line) == (
        f'127.0.0.1:5 - "POST /caption?url=data:image/png;base64,[{len(PAYLOAD)} chars]&max_tokens=4 HTTP/1.1" 200'
    )


def test_a_percent_encoded_data_url_is_shortened_too() -> None:
    encoded = quote(f"data:image/jpeg;base64,{PAYLOAD}", safe="")
    shortened = shorten_data_urls(f"GET /ocr?url={encoded}")
    assert shortened.startswith("GET /ocr?url=data:image/jpeg;base64,[") and shortened.endswith(" chars]")
    assert len(shortened) < 80


def test_short_data_urls_and_prose_stay_as_they_are() -> None:
    for text in ("a `data:` URL is measured before it is decoded", "data:image/gif;base64,R0lGODlhAQABAAAAACw="):
        assert shorten_data_urls(text) == text


def test_the_access_log_record_is_shortened() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/caption?url=data%3Aimage%2Fpng%3Bbase64%2C{PAYLOAD}", "1.1", 200), None,
    )  # fmt: skip
    RedactingFilter().filter(record)
    shortened = f"data:image/png;base64,[{len(PAYLOAD)} chars]"
    assert record.getMessage() == f'127.0.0.1:5 - "GET /caption?url={shortened} HTTP/1.1" 200'
