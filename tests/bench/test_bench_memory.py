"""Peak RSS per window: the kernel's high-water mark is reset before each window and folded into the overall peak;
where the reset fails, the window falls back to the polled peak and says so. A fake process and mark stand in for
the kernel (memory_fakes.py); the last test resets the mark of a real child process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from memory_fakes import FakeMark, FakeProcess, quiet_watch

from bench.memory import HWM_SOURCE, ProcHighWaterMark

MiB = 2**20


def test_each_window_has_its_own_peak_and_the_run_keeps_the_highest() -> None:
    process = FakeProcess(100 * MiB)
    mark = FakeMark(process)
    watch = quiet_watch(process, mark)
    process.use(500 * MiB)  # loading: a peak before any window
    process.use(200 * MiB)

    watch.start_window()
    process.use(300 * MiB)
    process.use(250 * MiB)
    first = watch.window_peak()

    watch.start_window()
    process.use(260 * MiB)
    process.use(250 * MiB)
    second = watch.window_peak()

    assert mark.resets == 2
    assert (first.bytes, first.source) == (300 * MiB, HWM_SOURCE)
    assert (second.bytes, second.source) == (260 * MiB, HWM_SOURCE)  # not the first window's 300
    assert watch.stop() == 500 * MiB  # the load peak, folded in before the first reset


def test_without_a_reset_the_window_is_polled_and_says_why() -> None:
    process = FakeProcess(100 * MiB)
    watch = quiet_watch(process, FakeMark(process, failure="writing 5 to clear_refs failed: Permission denied"))
    process.use(250 * MiB)
    watch.start_window()  # the poller sees 250 MiB here
    process.use(900 * MiB)  # between two polls: only the mark sees it
    process.use(250 * MiB)
    peak = watch.window_peak()
    assert peak.bytes == 250 * MiB  # not the never-reset mark of 900, which would belong to the whole run
    assert peak.source.startswith("polled every 3600 s") and "Permission denied" in peak.source
    assert watch.stop() == 900 * MiB  # the run's peak still comes from the mark


def test_a_gone_process_falls_back_to_the_polled_peak() -> None:
    process = FakeProcess(100 * MiB)
    mark = FakeMark(process)
    watch = quiet_watch(process, mark)
    watch.start_window()
    mark.read = lambda: None  # type: ignore[method-assign]  # /proc/<pid>/status vanished
    peak = watch.window_peak()
    assert peak.bytes == 100 * MiB and "unreadable" in peak.source
    watch.stop()


def test_proc_mark_reads_vmhwm_and_resets_through_clear_refs(tmp_path: Path) -> None:
    folder = tmp_path / "4242"
    folder.mkdir()
    (folder / "status").write_text("Name:\tpython\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t  1024 kB\n")
    (folder / "clear_refs").write_text("")
    mark = ProcHighWaterMark(4242, proc=tmp_path)
    assert mark.read() == 2048 * 1024
    assert mark.reset() is None
    assert (folder / "clear_refs").read_text() == "5"

    missing = ProcHighWaterMark(7, proc=tmp_path)
    assert missing.read() is None
    failure = missing.reset()
    assert failure is not None and "clear_refs" in failure


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_the_kernel_resets_the_mark_of_a_child() -> None:
    """The real file: a child that held 200 MiB and let it go has a mark near its RSS after the reset."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "b = bytearray(200 * 2**20); del b; print('ok', flush=True); import time; time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ok"
        mark = ProcHighWaterMark(child.pid)
        before = mark.read()
        assert before is not None and before >= 200 * MiB
        failure = mark.reset()
        if failure:
            pytest.skip(failure)
        after = mark.read()
        assert after is not None and after < before - 150 * MiB
        assert after <= _rss(child.pid) + 8 * MiB
    finally:
        child.kill()
        child.wait()
