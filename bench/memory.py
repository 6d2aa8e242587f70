"""Watching a child process's memory: its peak resident set, and a guard for the machine.

The guard kills the watched process when the memory available to everyone falls below a floor, and says why,
rather than let the kernel's OOM killer pick a victim among whatever else runs on a shared machine.
"""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path

import psutil

GiB = 1024**3
DEFAULT_FLOOR_BYTES = 2 * GiB


class MemoryWatch:
    """Peak RSS of one process, and the machine's guard (see the module docstring). The guard acts only while
    ``armed``: among several watched processes, arm the one doing the work, so that an idle one is not killed for
    memory another one took."""

    def __init__(
        self, process: psutil.Process, min_available_bytes: int, *, armed: bool = True, interval_s: float = 0.2
    ) -> None:
        self._process = process
        self.armed = armed
        self._min_available = min_available_bytes
        self._interval = interval_s
        self.polled_peak = 0
        self.killed_because: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):  # the process may be gone between two polls
                rss = self._process.memory_info().rss
                self.polled_peak = max(self.polled_peak, rss)
                available = psutil.virtual_memory().available
                if self.armed and available < self._min_available and self.killed_because is None:
                    self.killed_because = (
                        f"stopped by the benchmark: the machine had {available / GiB:.1f} GiB available "
                        f"(floor {self._min_available / GiB:.1f} GiB) with this process at {rss / GiB:.1f} GiB RSS"
                    )
                    self._process.kill()
            self._stop.wait(self._interval)

    def high_water_mark(self) -> int | None:
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else None

    def stop(self) -> int:
        """Stop watching; returns the peak RSS in bytes (read before the process exits)."""
        peak = self.high_water_mark() or 0
        self._stop.set()
        self._thread.join()
        return max(peak, self.polled_peak)
