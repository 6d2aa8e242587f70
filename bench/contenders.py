"""The contenders' processes, seen from the orchestrator: start, send a job, read the answer, stop.

Each contender lives in its own process for the whole benchmark (loaded once, so that rounds alternate cheaply
and its peak memory is its own). Its stderr goes to a log file whose tail is quoted when something fails.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.measurement import Measurement
from bench.memory import DEFAULT_FLOOR_BYTES, MemoryWatch
from bench.workload import Job


class ContenderFailed(RuntimeError):
    """A contender could not load, answered a job with an error, or stopped answering."""


@dataclass(frozen=True)
class ContenderSpec:
    name: str  # shown in the report: "pytorch-eager", "engine-fp32", "engine-openvino-bf16-fp32", ...
    kind: str  # torch | engine | openvino (the vision encoder graph alone)
    path: Path  # checkpoint folder (torch) or model folder (engine, openvino)
    variant: str = "fp32"
    provider: str = "cpu"
    threads: int = 0
    backend: str | None = None  # engine: EngineSettings.backend, where it has one
    precision: str | None = None  # torch: fp32 | bf16; engine, openvino: f32 | bf16; None: the default

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "bench.worker", self.kind, str(self.path),
            "--variant", self.variant, "--provider", self.provider, "--threads", str(self.threads),
        ]  # fmt: skip
        if self.backend:
            command += ["--backend", self.backend]
        if self.precision:
            command += ["--precision", self.precision]
        return command


class ContenderProcess:
    def __init__(self, spec: ContenderSpec, log_path: Path, load_timeout_s: float) -> None:
        self.spec = spec
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("w")
        self._proc = subprocess.Popen(
            spec.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1
        )
        self._memory = MemoryWatch(psutil.Process(self._proc.pid), DEFAULT_FLOOR_BYTES)  # armed while loading
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.ready = self._expect("ready", load_timeout_s)
        except ContenderFailed:
            self.kill()
            raise
        self._memory.armed = False

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _log_tail(self, lines: int = 15) -> str:
        if not self._log.closed:
            self._log.flush()
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(tail)

    def _expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self.kill()
            raise ContenderFailed(f"{self.spec.name} did not answer within {timeout_s:.0f} s") from None
        if line is None:
            code = self._proc.wait()
            reason = self._memory.killed_because or self._log_tail()
            raise ContenderFailed(f"{self.spec.name} exited (code {code}):\n{reason}")
        message = json.loads(line)
        if message.pop("event", None) != event:
            raise ContenderFailed(f"{self.spec.name}: {message.get('message', message)}\n{self._log_tail()}")
        return message

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:  # a broken pipe: the worker is gone
            raise ContenderFailed(f"{self.spec.name} is gone ({exc}):\n{self._log_tail()}") from None

    def run(self, job: Job, timeout_s: float) -> Measurement:
        self._memory.armed = True
        try:
            self._send(job.to_dict())
            return Measurement.from_dict(self._expect("result", timeout_s))
        finally:
            self._memory.armed = False

    def close(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stop the worker; returns its ``bye`` (peak RSS) or an empty dict if it had already died."""
        try:
            self._send({"quit": True})
            bye = self._expect("bye", timeout_s)
        except ContenderFailed:
            bye = {}
        self.kill()
        return bye

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def kill(self) -> None:
        self._memory.stop()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._log.close()
