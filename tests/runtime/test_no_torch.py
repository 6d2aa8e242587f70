"""``runtime`` and every module in it import without torch, transformers or optimum (checked in a fresh process)."""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

CHECK = """
import importlib, pkgutil, sys
import runtime
names = ["runtime"] + [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
names = [name for name in names if name != "runtime.__main__"]  # importing it runs the CLI
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # runtime.cluster's Ray modules, where the ray extra is not installed
        if (exc.name or "").split(".")[0] != "ray":
            raise
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum"))
print(len(names), ",".join(heavy))
"""


def test_runtime_imports_no_torch() -> None:
    completed = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300, check=True)
    count, _, heavy = completed.stdout.strip().partition(" ")
    assert int(count) > 30  # every subpackage was walked
    assert heavy == "", f"runtime pulled in {heavy}"


def test_the_check_would_see_torch() -> None:
    """Negative control: the same check run after importing a module that needs torch reports it."""
    probe = "import sys\nsys.modules['torch'] = type(sys)('torch')\n" + CHECK
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert completed.stdout.strip().endswith("torch")


SERVE_WITHOUT_TORCH = """
import sys
for name in ("torch", "transformers", "optimum", "onnx"):
    sys.modules[name] = None  # any import of them now raises ImportError, as where they are not installed
from runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_server_serves_a_model_folder_without_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """What `make install-serve` installs is enough: serve a prebuilt folder, answer, and stop cleanly on SIGTERM."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", SERVE_WITHOUT_TORCH, "serve", "--port", str(port)]
    command += ["--model", f"microsoft-florence-2-large={tiny_model_dir}"]
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _answers(f"{url}/readyz"):
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the server was not ready in time"
            time.sleep(0.1)
        image = io.BytesIO()
        Image.new("RGB", (32, 24), (200, 40, 40)).save(image, "PNG")
        image_url = "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()
        body = {
            "model": "microsoft-florence-2-large",
            "max_tokens": 4,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_url}},
                        {"type": "text", "text": "<OCR>"},
                    ],
                }
            ],
        }
        request = urllib.request.Request(
            f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            answer = json.loads(reply.read())
        assert answer["choices"][0]["finish_reason"] in ("stop", "length")
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0  # drained, then a clean exit: not death by the signal (143)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False
