"""Lifecycle of a server: loading -> ready -> draining, plus why loading failed if it did."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# Why the server's backends cannot serve now (a Ray model deployment without a healthy replica), or None.
ReadinessProbe = Callable[[], Awaitable[str | None]]


@dataclass
class ServerState:
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    active: int = 0  # work requests admitted and not yet finished (running or waiting for a slot)
    probe: ReadinessProbe | None = None
    # Tasks of the HTTP requests in progress: a drain that is not uvicorn's (Ray's ingress) cancels them at its end.
    requests: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def accepting(self) -> bool:
        return self.ready and not self.draining

    async def unready_reason(self) -> str | None:
        """None when ready: accepting, and the probe (if any) sees every backend serving."""
        if not self.accepting:
            return self.not_ready_reason()
        return await self.probe() if self.probe is not None else None

    def not_ready_reason(self) -> str:
        if self.draining:
            return "the server is shutting down"
        if self.load_error:
            return f"the model failed to load: {self.load_error}"
        return "the model is loading and warming up"
