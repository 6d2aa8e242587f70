"""``ModelHandle`` over a Ray Serve deployment handle: Ray's failures become ReplicaLost and NoReplica.

A call first waits to be assigned to a replica, for at most ``wait_s``: Serve's router holds a call while no
replica is up (one killed and not yet restarted), and a request must not hang there. The model deployment accepts
as many calls as the ingresses admit, so a wait never comes from ordinary load. A call whose caller goes away
(client disconnect, timeout) is cancelled on the replica too, which drops it from its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle

from runtime.cluster.remote_engine import ModelFacts, NoReplica, ReplicaLost, ReplicaName
from runtime.engine.api import TaskRequest, TaskResult

DESCRIBE_TIMEOUT_S = 300.0  # a replica loads and warms its model before it answers; a large one takes minutes


class RayModelHandle:
    def __init__(self, handle: DeploymentHandle, *, wait_s: float) -> None:
        # By reference: the call is assigned to a replica first (bounded by the wait), then its object awaited.
        self._handle = handle.options(_by_reference=True)
        self._streams = self._handle.options(stream=True)
        self._wait_s = wait_s

    def describe(self) -> ModelFacts:
        """Blocking (call it off the event loop): what the model is and what a request may ask of it."""
        facts = self._handle.describe.remote().result(timeout_s=DESCRIBE_TIMEOUT_S)
        assert isinstance(facts, ModelFacts)
        return facts

    async def run(self, request: TaskRequest) -> tuple[str, TaskResult]:
        response = self._handle.run.remote(request)
        try:
            with _translated():
                ref = await self._assigned(response, response._to_object_ref())
                answer = await ref
        except asyncio.CancelledError:
            response.cancel()
            raise
        replica, result = answer
        return replica, result

    async def stream(self, request: TaskRequest) -> AsyncIterator[ReplicaName | str | TaskResult]:
        response = self._streams.stream.remote(request)
        finished = False
        try:
            with _translated():
                refs = await self._assigned(response, response._to_object_ref_gen())
                async for ref in refs:
                    yield await ref
            finished = True
        finally:
            if not finished:
                response.cancel()  # the consumer left or the replica failed: the replica drops the request

    async def _assigned(self, response: Any, assignment: Any) -> Any:
        try:
            return await asyncio.wait_for(assignment, self._wait_s)
        except TimeoutError:
            response.cancel()
            raise NoReplica(f"no live replica took the request within {self._wait_s:g} s") from None


@contextlib.contextmanager
def _translated() -> Any:
    try:
        yield
    except RayActorError as exc:  # died, unreachable, or killed with the request on it
        raise ReplicaLost(type(exc).__name__) from exc
    except RayTaskError as exc:  # the replica raised: give the caller the model's own error
        cause = exc.cause
        if isinstance(cause, BaseException):
            raise cause from None
        raise
