"""The server as a separate process (its memory, its signals, its log), and a bounded HTTP load against it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from live_server import answers_ready
from waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE_SERVER = Path(__file__).with_name("serve_fake_engine.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """``python -m runtime serve`` (the tiny model) or the fake-engine server, on a free loopback port."""

    def __init__(self, command: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "FLORENCE_HOST": "127.0.0.1", "FLORENCE_PORT": str(self.port), **env}
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            command, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, text=True
        )

    @classmethod
    def fake_engine(cls, env: Mapping[str, str], log_path: Path, delay_s: float = 0.02) -> ServerProcess:
        return cls([sys.executable, str(FAKE_ENGINE_SERVER), "--delay", str(delay_s)], env, log_path)

    @classmethod
    def tiny_model(cls, model_dir: Path, functions_dir: Path, env: Mapping[str, str], log_path: Path) -> ServerProcess:
        command = [sys.executable, "-m", "runtime", "serve", "--functions", str(functions_dir)]
        return cls([*command, "--model", f"microsoft-florence-2-large={model_dir}"], env, log_path)

    def wait_ready(self, timeout_s: float = 120.0) -> ServerProcess:
        wait_until(self._ready, lambda: f"the server to be ready:\n{self.log()[-3000:]}", timeout_s)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        return answers_ready(self.url)

    def rss_bytes(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Outcome:
    status: int | None  # None: no HTTP answer (see error)
    retry_after: str | None = None
    error: str | None = None
    started: float = 0.0
    seconds: float = 0.0


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def statuses(self) -> Counter[int | None]:
        return Counter(outcome.status for outcome in self.outcomes)

    @property
    def errors(self) -> list[str]:
        return [outcome.error for outcome in self.outcomes if outcome.error]

    def summary(self) -> str:
        slowest = max((outcome.seconds for outcome in self.outcomes), default=0.0)
        return (
            f"{len(self.outcomes)} requests in {self.seconds:.1f} s, statuses {dict(self.statuses)}, "
            f"{len(self.errors)} without an answer, slowest {slowest:.2f} s"
        )


async def load(
    url: str,
    bodies: Callable[[int], Any],
    *,
    requests: int,
    concurrency: int,
    timeout_s: float = 60.0,
    path: str = "/v1/chat/completions",
) -> LoadReport:
    """``requests`` POSTs of ``bodies(i)`` with ``concurrency`` in flight; every one ends in an Outcome."""
    report = LoadReport()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                outcome = Outcome(status=None, started=time.perf_counter() - started)
                try:
                    async with session.post(url + path, json=bodies(index)) as response:
                        await response.read()
                        outcome.status = response.status
                        outcome.retry_after = response.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcome.error = f"{type(exc).__name__}: {exc}"
                outcome.seconds = time.perf_counter() - started - outcome.started
                report.outcomes.append(outcome)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.seconds = time.perf_counter() - started
    return report
