"""``/readyz`` through Ray: ready only while every model deployment has a running replica.

The ingress answering at all shows that its own deployment has one. Serve's status is read from the controller
off the event loop, and at most every ``PROBE_CACHE_S`` whatever the rate of probes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

PROBE_CACHE_S = 0.5


def unready_reason(status: Any, app_name: str, deployments: Sequence[str]) -> str | None:
    """Why ``deployments`` of ``app_name`` cannot serve, from a ``serve.status()`` answer; None when all can."""
    app = status.applications.get(app_name)
    if app is None:
        return f"the Ray Serve application {app_name!r} is not deployed"
    missing = []
    for name in deployments:
        deployment = app.deployments.get(name)
        running = 0 if deployment is None else int(deployment.replica_states.get("RUNNING", 0))
        if running < 1:
            missing.append(name)
    if missing:
        return f"no healthy replica of {', '.join(missing)} yet (Ray is starting or restarting one)"
    return None


class ServeProbe:
    def __init__(self, read_status: Callable[[], Any], app_name: str, deployments: Sequence[str]) -> None:
        self._read_status = read_status
        self._app_name = app_name
        self._deployments = tuple(deployments)
        self._last: tuple[float, str | None] | None = None

    async def __call__(self) -> str | None:
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < PROBE_CACHE_S:
            return self._last[1]
        try:
            status = await asyncio.to_thread(self._read_status)
            reason = unready_reason(status, self._app_name, self._deployments)
        except Exception as exc:  # the controller is unreachable: not ready, and say why
            reason = f"the Ray Serve controller cannot be reached ({type(exc).__name__}: {exc})"
        self._last = (now, reason)
        return reason
