"""The server under test: ``python -m runtime serve`` on a free loopback port, its memory watched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from bench.memory import DEFAULT_FLOOR_BYTES, MemoryWatch

MODEL_ID = "microsoft-florence-2-large"


@dataclass(frozen=True)
class ServerConfig:
    model_dir: Path
    variant: str
    provider: str
    max_concurrent: int
    max_new_tokens: int
    request_timeout_s: float
    min_available_bytes: int = DEFAULT_FLOOR_BYTES  # below this, the watch kills the server
    ray_replicas: int = 0  # > 0: the same server on Ray Serve with that many model replicas (bench/ray_row.py)
    engine: tuple[tuple[str, str], ...] = ()  # further EngineSettings fields (backend, precision), as set in process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, config: ServerConfig, log_path: Path, functions_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FLORENCE_ENGINE_VARIANT": config.variant,
            "FLORENCE_ENGINE_PROVIDER": config.provider,
            "FLORENCE_INVOCATION_TIMEOUT_S": str(config.request_timeout_s),
            "FLORENCE_MAX_CONCURRENT": str(config.max_concurrent),
            "FLORENCE_MAX_QUEUED": str(4 * config.max_concurrent),
            "FLORENCE_MAX_NEW_TOKENS": str(config.max_new_tokens),
            "FLORENCE_LOG_LEVEL": "warning",
            **{f"FLORENCE_ENGINE_{field.upper()}": value for field, value in config.engine},
        }
        command = [
            sys.executable, "-m", "runtime", "serve",
            "--model", f"{MODEL_ID}={config.model_dir}",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--functions", str(functions_dir),
        ]  # fmt: skip
        if config.ray_replicas:
            command += ["--ray-replicas", str(config.ray_replicas)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("w")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.memory = MemoryWatch(psutil.Process(self.process.pid), config.min_available_bytes)

    def log_tail(self, lines: int = 20) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def exit_reason(self) -> str | None:
        """Why the server is gone, or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        if self.memory.killed_because:
            return self.memory.killed_because
        if code == -signal.SIGKILL:
            return "the server was killed (SIGKILL; out of memory?)"
        return f"the server exited with code {code}:\n{self.log_tail()}"

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float) -> float:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            reason = self.exit_reason()
            if reason:
                raise RuntimeError(reason)
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(f"{self.base}/readyz") as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            await asyncio.sleep(0.5)
        raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> int:
        """Stop the server; returns its peak RSS in bytes."""
        peak = self.memory.stop()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)  # on Ray: the drain, then the local cluster's shutdown
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return peak
