"""Lifecycle of a server: loading -> ready -> draining, plus why loading failed if it did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerState:
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    active: int = 0  # work requests admitted and not yet finished (running or waiting for a slot)

    @property
    def accepting(self) -> bool:
        return self.ready and not self.draining

    def not_ready_reason(self) -> str:
        if self.draining:
            return "the server is shutting down"
        if self.load_error:
            return f"the model failed to load: {self.load_error}"
        return "the model is loading and warming up"
