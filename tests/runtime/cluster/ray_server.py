"""``python -m runtime serve --ray-replicas N`` as a separate process on a free loopback port, with its log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from live_server import answers_ready
from waiting import wait_until

REPO = Path(__file__).resolve().parents[3]
MODEL_ID = "microsoft-florence-2-large"
# "(ServeReplica:florence:model-0-... pid=123) ... model replica model-0-...#abc serves ..."
_REPLICA_LINE = re.compile(r"pid=(\d+)\).*model replica (\S+) serves")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RayServer:
    def __init__(
        self, model_dir: Path, functions_dir: Path, replicas: int, env: Mapping[str, str], log_path: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        command = [sys.executable, "-m", "runtime", "serve", "--ray-replicas", str(replicas)]
        command += ["--functions", str(functions_dir), "--model", f"{MODEL_ID}={model_dir}"]
        full_env = {**os.environ, "FLORENCE_HOST": "127.0.0.1", "FLORENCE_PORT": str(self.port), **env}
        self.process = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 240.0) -> RayServer:
        wait_until(self._ready, lambda: f"the server to be ready:\n{self.log()[-4000:]}", timeout_s)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        return answers_ready(self.url)

    def replicas(self) -> dict[int, str]:
        """Live model replicas: process id -> the name it answers with (X-Model-Replica)."""
        named = {int(pid): name for pid, name in _REPLICA_LINE.findall(self.log())}
        return {pid: name for pid, name in named.items() if _alive(pid)}

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()  # Ray's own processes share its fate (they die with it)
                self.process.wait(10)
        self._log.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
