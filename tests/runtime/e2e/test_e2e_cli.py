"""``python -m runtime`` as a person runs it: invoke a function once, and serve until SIGTERM drains it."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from e2e_support import REPO, ImageServer, make_photo
from live_server import Reply, answers_ready, call, metric
from waiting import wait_until

# Each test starts `python -m runtime` in a process of its own, which loads the model; the in-process server tests
# of this folder stay fast.
pytestmark = pytest.mark.slow

MODEL_ID = "microsoft-florence-2-large"


def _env() -> dict[str, str]:
    return {**os.environ, "FLORENCE_IMAGE_ALLOWED_NETWORKS": "127.0.0.0/8", "FLORENCE_MAX_NEW_TOKENS": "8"}


def _runtime(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime", *args]


def test_invoke_a_function_once(tiny_model_dir: Path, e2e_functions: Path, image_server: ImageServer) -> None:
    common = ["--functions", str(e2e_functions), "--model", f"{MODEL_ID}={tiny_model_dir}"]
    completed = subprocess.run(
        _runtime("invoke", "caption", *common, "--path", f"?url={image_server.url}/photo.jpg&max_tokens=4"),
        capture_output=True, text=True, timeout=120, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "HTTP 200" in completed.stderr and "RANDOM WEIGHTS" in completed.stderr
    body = json.loads(completed.stdout)
    assert isinstance(body["caption"], str) and body["usage"]["completion_tokens"] <= 4
    completed = subprocess.run(
        _runtime("invoke", "echo", *common, "--data", '{"a": [1, 2]}'),
        capture_output=True, text=True, timeout=120, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == {"method": "POST", "got": {"a": [1, 2]}}
    completed = subprocess.run(
        _runtime("invoke", "raising", *common), capture_output=True, text=True, timeout=120, cwd=REPO, env=_env()
    )
    assert completed.returncode == 1 and "HTTP 500" in completed.stderr
    assert json.loads(completed.stdout)["error"]["code"] == "function_error"
    assert "tok-e2e-secret-value" not in completed.stdout + completed.stderr


def test_invoke_sends_an_image_file_and_encodes_query_values(
    tiny_model_dir: Path, e2e_functions: Path, tmp_path: Path
) -> None:
    common = ["--functions", str(e2e_functions), "--model", f"{MODEL_ID}={tiny_model_dir}"]
    photo = tmp_path / "photo.png"
    make_photo().save(photo)
    completed = subprocess.run(
        _runtime("invoke", "caption", *common, "--image", str(photo), "--query", "max_tokens=4"),
        capture_output=True, text=True, timeout=120, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["usage"]["completion_tokens"] <= 4
    # a data: URL typed as is: its "+", "/" and "=" reach the function intact (a raw query would read "+" as " ")
    url = "data:image/png;base64," + base64.b64encode(photo.read_bytes()).decode()
    assert "+" in url
    completed = subprocess.run(
        _runtime("invoke", "caption", *common, "--query", f"url={url}", "--query", "max_tokens=4"),
        capture_output=True, text=True, timeout=120, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    # a file that is no image: the error names what the caller sent (the body), not the binding's payload path
    (tmp_path / "notes.png").write_text("not an image")
    completed = subprocess.run(
        _runtime("invoke", "caption", *common, "--image", str(tmp_path / "notes.png")),
        capture_output=True, text=True, timeout=120, cwd=REPO, env=_env(),
    )  # fmt: skip
    assert completed.returncode == 1 and "HTTP 4" in completed.stderr
    assert json.loads(completed.stdout)["error"]["param"] == "body"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_then_sigterm_drains_in_flight_requests(tiny_model_dir: Path, e2e_functions: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    model = f"{MODEL_ID}={tiny_model_dir}"
    process = subprocess.Popen(
        _runtime("serve", "--functions", str(e2e_functions), "--model", model, "--port", str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=_env(),
    )  # fmt: skip
    try:
        wait_until(lambda: process.poll() is not None or answers_ready(url), "the server to become ready", 120)
        assert process.poll() is None, "the server exited before it was ready"
        replies: list[Reply] = []
        slow = threading.Thread(target=lambda: replies.append(call(url, "GET", "/sleepy")))
        slow.start()
        wait_until(lambda: metric(url, "florence_requests_in_flight") == 1, "the slow request to be running")
        process.send_signal(signal.SIGTERM)
        slow.join(30)
        assert replies and replies[0].status == 200 and replies[0].body == b"slept"
        # a drained SIGTERM is a clean stop: exit 0, not death by the signal (143 under make or a supervisor)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    log = process.stdout.read() if process.stdout else ""
    assert "WITH RANDOM WEIGHTS" in log
    assert "models and the image fetcher are closed" in log
