"""Watching a child process's memory: its peak resident set, overall and per window, and a guard for the machine.

The guard kills the watched process when the memory available to everyone falls below a floor, and says why,
rather than let the kernel's OOM killer pick a victim among whatever else runs on a shared machine.

Peaks come from the kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``), which sees every page the
process ever held, however briefly; RSS is also polled, in case the mark cannot be read. A window (one load level)
starts by resetting the mark (writing ``5`` to ``/proc/<pid>/clear_refs``, Linux 4.0 and later), after folding
the mark so far into the overall peak. Where the reset fails, the window's peak is the polled one, which can miss
a peak shorter than the polling interval, and the window says so.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

GiB = 1024**3
DEFAULT_FLOOR_BYTES = 2 * GiB
HWM_SOURCE = "VmHWM, reset before the level"


class Watched(Protocol):
    """The process watched (a ``psutil.Process``; a fake in tests)."""

    @property
    def pid(self) -> int: ...

    def memory_info(self) -> Any: ...  # with ``rss`` in bytes

    def kill(self) -> None: ...


class HighWaterMark(Protocol):
    """A process's peak resident set as the kernel keeps it, and its reset."""

    def read(self) -> int | None:
        """The peak in bytes since the process started or since the last reset; None where unavailable."""

    def reset(self) -> str | None:
        """Restart the peak from the current RSS; None when done, otherwise why it could not be done."""


class ProcHighWaterMark:
    """``VmHWM`` of ``/proc/<pid>/status``, reset through ``/proc/<pid>/clear_refs``."""

    def __init__(self, pid: int, proc: Path = Path("/proc")) -> None:
        self._status = proc / str(pid) / "status"
        self._clear_refs = proc / str(pid) / "clear_refs"

    def read(self) -> int | None:
        try:
            status = self._status.read_text()
        except OSError:
            return None
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else None

    def reset(self) -> str | None:
        try:
            with self._clear_refs.open("w") as handle:
                handle.write("5")  # 5: reset the peak RSS (Documentation/filesystems/proc.rst)
        except OSError as exc:
            return f"writing 5 to {self._clear_refs} failed: {exc.strerror or exc}"
        return None


@dataclass(frozen=True)
class WindowPeak:
    bytes: int
    source: str  # HWM_SOURCE, or the polled peak and why


class MemoryWatch:
    """Peak RSS of one process, and the machine's guard (see the module docstring). The guard acts only while
    ``armed``: among several watched processes, arm the one doing the work, so that an idle one is not killed for
    memory another one took."""

    def __init__(
        self,
        process: Watched,
        min_available_bytes: int,
        *,
        armed: bool = True,
        interval_s: float = 0.2,
        high_water: HighWaterMark | None = None,
    ) -> None:
        self._process = process
        self._high_water = high_water or ProcHighWaterMark(process.pid)
        self.armed = armed
        self._min_available = min_available_bytes
        self._interval = interval_s
        self._lock = threading.Lock()  # the poller and a window's start both write the polled peaks
        self.polled_peak = 0
        self._window_polled = 0
        self._folded_peak = 0  # the high-water marks read before each reset
        self._reset_failure: str | None = None
        self.killed_because: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):  # the process may be gone between two polls
                rss = self._process.memory_info().rss
                self._observe(rss)
                available = psutil.virtual_memory().available
                if self.armed and available < self._min_available and self.killed_because is None:
                    self.killed_because = (
                        f"stopped by the benchmark: the machine had {available / GiB:.1f} GiB available "
                        f"(floor {self._min_available / GiB:.1f} GiB) with this process at {rss / GiB:.1f} GiB RSS"
                    )
                    self._process.kill()
            self._stop.wait(self._interval)

    def _observe(self, rss: int) -> None:
        with self._lock:
            self.polled_peak = max(self.polled_peak, rss)
            self._window_polled = max(self._window_polled, rss)

    def high_water_mark(self) -> int | None:
        return self._high_water.read()

    def start_window(self) -> None:
        """Measure a new peak from now on (see the module docstring); the overall peak keeps the earlier ones."""
        with self._lock:
            self._folded_peak = max(self._folded_peak, self._high_water.read() or 0)
            self._window_polled = 0
        with contextlib.suppress(psutil.Error):
            self._observe(self._process.memory_info().rss)
        self._reset_failure = self._high_water.reset()

    def window_peak(self) -> WindowPeak:
        """The peak since ``start_window``: the reset high-water mark, else the polled peak and why."""
        polled = self._window_polled
        why = self._reset_failure
        mark = None if why else self._high_water.read()
        if mark is None:
            why = why or "VmHWM unreadable (the process is gone?)"
            return WindowPeak(polled, f"polled every {self._interval:g} s ({why})")
        return WindowPeak(max(mark, polled), HWM_SOURCE)

    def stop(self) -> int:
        """Stop watching; returns the peak RSS of the whole run in bytes (read before the process exits)."""
        peak = max(self._folded_peak, self.high_water_mark() or 0)
        self._stop.set()
        self._thread.join()
        return max(peak, self.polled_peak)
