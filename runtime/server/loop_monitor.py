"""Watches the event loop for stalls: blocking work in an ``async def`` function holds up every request.

The server cannot stop a function from blocking its loop, but it can say so: each stall is measured (the
``florence_event_loop_lag_seconds`` histogram) and a long one is logged with what to do about it.
"""

from __future__ import annotations

import asyncio
import logging

from runtime.server.metrics import Metrics

log = logging.getLogger(__name__)

INTERVAL_S = 0.1
WARN_AFTER_S = 0.5


async def watch_event_loop(
    metrics: Metrics, interval_s: float = INTERVAL_S, warn_after_s: float = WARN_AFTER_S
) -> None:
    """Runs until cancelled: sleeps ``interval_s`` at a time and measures how late each wake-up comes."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        lag = max(0.0, loop.time() - started - interval_s)
        metrics.loop_lag.observe(lag)
        if lag >= warn_after_s:
            log.warning(
                "the event loop was blocked for %.2f s, and every request waited. Blocking calls in an `async def` "
                "function (time.sleep, requests, heavy CPU work) do this: make it a plain `def fetch` (it runs in "
                "a thread) or move the work to `await asyncio.to_thread(...)`",
                lag,
            )
