"""A process and high-water mark that follow the kernel's rule without a kernel: the mark follows every RSS the
process reaches, and a reset restarts it from the current RSS (imported by the tests; this folder is on sys.path)."""

from __future__ import annotations

from types import SimpleNamespace

from waiting import wait_until

from bench.memory import MemoryWatch

NEVER = 3600.0  # a polling interval no test waits for: the poller looks once at the start and at each window


class FakeProcess:
    pid = 4242

    def __init__(self, rss: int) -> None:
        self.rss = rss
        self.mark = rss

    def use(self, rss: int) -> None:
        self.rss = rss
        self.mark = max(self.mark, rss)

    def memory_info(self) -> SimpleNamespace:
        return SimpleNamespace(rss=self.rss)

    def kill(self) -> None:
        raise AssertionError("the guard must not act with a floor of 0")


class FakeMark:
    def __init__(self, process: FakeProcess, failure: str | None = None) -> None:
        self.process = process
        self.failure = failure
        self.resets = 0

    def read(self) -> int | None:
        return self.process.mark

    def reset(self) -> str | None:
        if self.failure:
            return self.failure
        self.resets += 1
        self.process.mark = self.process.rss
        return None


def quiet_watch(process: FakeProcess, mark: FakeMark) -> MemoryWatch:
    """A watch whose poller has looked once and will not look again: only windows' starts add polled values."""
    watch = MemoryWatch(process, 0, interval_s=NEVER, high_water=mark)
    wait_until(lambda: watch.polled_peak, "the watch's first poll")
    return watch
