"""``ctx``: the request id, the function's configured arguments, and ``wait_until`` for work after the response."""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Awaitable, Mapping
from types import MappingProxyType
from typing import Any

from runtime.functions.secrets import SECRETS

log = logging.getLogger(__name__)


class Context:
    def __init__(self, request_id: str, args: Mapping[str, Any], function: str) -> None:
        self.request_id = request_id
        self.args: Mapping[str, Any] = MappingProxyType(dict(args))
        self.function = function
        self._pending: list[Awaitable[Any]] = []

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        """Run ``awaitable`` after the response is sent (it still counts as in flight for a graceful shutdown)."""
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"wait_until takes an awaitable (a coroutine or task), not {type(awaitable).__name__}")
        self._pending.append(awaitable)

    waitUntil = wait_until  # the platform's JavaScript spelling

    def take_pending(self) -> list[Awaitable[Any]]:
        pending, self._pending = self._pending, []
        return pending

    def discard_pending(self) -> None:
        """The invocation failed: what it scheduled does not run."""
        for awaitable in self.take_pending():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            elif isinstance(awaitable, asyncio.Future):
                awaitable.cancel()


async def run_after_response(function: str, request_id: str, pending: list[Awaitable[Any]], timeout_s: float) -> None:
    """Await what ``wait_until`` collected; failures are logged, the response has already gone."""
    try:
        async with asyncio.timeout(timeout_s):
            results = await asyncio.gather(*pending, return_exceptions=True)
    except TimeoutError:
        log.error(
            "function %r (request %s): wait_until work ran past %g s and was cancelled", function, request_id, timeout_s
        )
        return
    for result in results:
        if isinstance(result, BaseException):
            text = "".join(traceback.format_exception(result))
            log.error(
                "function %r (request %s): wait_until work raised:\n%s", function, request_id, SECRETS.redact(text)
            )
