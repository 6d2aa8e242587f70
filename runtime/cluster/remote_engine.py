"""The Engine of a model that runs in other processes (Ray Serve model replicas), seen through a ``ModelHandle``.

The binding's seam stays the one ``Engine`` protocol: the in-process engine and this one are interchangeable.
Requests are checked here with the model's own ``TaskRules`` (received from a replica), so a bad request is
refused before its image is fetched or sent anywhere; the image travels to the replica decoded.

Inference is idempotent, so a request whose replica died is sent once more; the router then picks a live
replica. When no replica takes it within the wait, or the second one dies too, the answer is 503 with
Retry-After: no request hangs on a dead replica and none is lost silently. A stream is retried only while none
of its text has been sent (the client cannot take back text it has read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from runtime.engine.api import ModelInfo, TaskQuery, TaskRequest, TaskResult
from runtime.engine.task_rules import TaskRules
from runtime.errors import InvalidImage, Unavailable
from runtime.server.model_replica import note_replica

log = logging.getLogger(__name__)


class ReplicaLost(Exception):
    """The replica that held the call died (or became unreachable) before answering."""


class NoReplica(Exception):
    """No live replica took the call within the wait."""


@dataclass(frozen=True)
class ReplicaName:
    """The first item of a replica's stream: who is answering."""

    name: str


@dataclass(frozen=True)
class ModelFacts:
    """What the caller side needs of a model without loading it: what it is, and what a request may ask."""

    info: ModelInfo
    rules: TaskRules


class ModelHandle(Protocol):
    """One model's replicas. Raises ReplicaLost and NoReplica; the model's own errors pass through unchanged."""

    async def run(self, request: TaskRequest) -> tuple[str, TaskResult]:
        """The replica's name and its result."""

    def stream(self, request: TaskRequest) -> AsyncIterator[ReplicaName | str | TaskResult]:
        """A ReplicaName, text deltas, then the TaskResult."""


class RemoteEngine:
    def __init__(self, handle: ModelHandle, facts: ModelFacts, *, retry_after_s: float) -> None:
        self.info = facts.info
        self._rules = facts.rules
        self._handle = handle
        self._retry_after_s = retry_after_s

    def is_text_task(self, task: str) -> bool:
        return self._rules.is_text_task(task)

    def validate(self, request: TaskRequest) -> None:
        if not isinstance(request.image, Image.Image):
            raise InvalidImage("the request needs one image (a PIL image)", param="image")
        self.check(request)

    def check(self, query: TaskQuery) -> tuple[int, ...]:
        return self._rules.check(query)

    async def run(self, request: TaskRequest) -> TaskResult:
        self.validate(request)
        try:
            replica, result = await self._handle.run(request)
        except ReplicaLost as lost:
            log.warning("%s: its replica died during the request (%s); sending it once more", self.info.name, lost)
            try:
                replica, result = await self._handle.run(request)
            except (ReplicaLost, NoReplica) as again:
                raise self._unavailable(again) from again
        except NoReplica as none:
            raise self._unavailable(none) from none
        note_replica(replica)
        return result

    async def run_batch(self, requests: Sequence[TaskRequest]) -> list[TaskResult]:
        for request in requests:  # all valid, or none is sent
            self.validate(request)
        # Sent together, so they reach a replica within its batching window and share a batch there.
        return list(await asyncio.gather(*(self.run(request) for request in requests)))

    async def stream(self, request: TaskRequest) -> AsyncIterator[str | TaskResult]:
        self.validate(request)
        retried = False
        while True:
            source = self._handle.stream(request)
            sent_text = False
            try:
                async for item in source:
                    if isinstance(item, ReplicaName):
                        note_replica(item.name)
                        continue
                    sent_text = sent_text or isinstance(item, str)
                    yield item
                return
            except ReplicaLost as lost:
                if sent_text or retried:
                    raise self._unavailable(lost) from lost
                log.warning("%s: its replica died before streaming (%s); sending it once more", self.info.name, lost)
                retried = True
            except NoReplica as none:
                raise self._unavailable(none) from none
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def close(self) -> None:
        """Nothing to free here: the replicas belong to the cluster, which outlives one ingress."""

    def _unavailable(self, cause: Exception) -> Unavailable:
        log.error("%s: no model replica could answer: %s", self.info.name, cause)
        return Unavailable(
            f"no replica of model {self.info.name} could answer ({cause}); the cluster is restarting it, retry shortly",
            retry_after=self._retry_after_s,
        )
