"""Waiting on state, never on time: a test that needs an event to have happened (a request admitted, a file
written, a server draining) polls for that state here, up to a deadline, and fails saying what never happened.

The deadlines are generous on purpose: they bound a broken run, they do not pace a working one (a condition that
holds returns at the next poll, a few milliseconds later).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.01


def wait_until(condition: Callable[[], T], what: str | Callable[[], str], timeout_s: float = 30.0) -> T:
    """``condition()``'s first truthy value; fails with ``what`` (text, or a function that tells the state seen)
    when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {_describe(what)}")
        time.sleep(POLL_S)
    return value


async def wait_until_async(condition: Callable[[], T], what: str | Callable[[], str], timeout_s: float = 30.0) -> T:
    """``wait_until`` for a coroutine: the event loop keeps running between polls."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {_describe(what)}")
        await asyncio.sleep(POLL_S)
    return value


def _describe(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()
