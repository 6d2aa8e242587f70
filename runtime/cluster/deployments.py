"""The two Ray Serve deployments: a model replica per model folder, and the HTTP ingress.

A **model replica** loads its engine once and keeps its micro-batching: the requests Serve routes to one replica
share its batches. It answers with its name, which the ingress puts in ``X-Model-Replica``.

The **ingress** is the server's own Starlette app (functions, OpenAI endpoints, health, metrics, limits), whose
``AI`` binding reaches the models through Serve handles (``RemoteEngine``) instead of in-process engines. Images
are fetched and checked here (SSRF guard and limits as in the direct server) and travel to a replica decoded.
Its drain is driven by ``serve_on_ray``: ``start_drain`` then ``pending`` until nothing is admitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp

from runtime.cluster.health import ServeProbe
from runtime.cluster.ray_handle import RayModelHandle
from runtime.cluster.remote_engine import ModelFacts, RemoteEngine, ReplicaName
from runtime.config import Settings
from runtime.engine.api import Engine, TaskRequest, TaskResult
from runtime.engine.settings import EngineSettings
from runtime.server.logs import configure_logging

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.05


def _replica_name() -> str:
    context = serve.get_replica_context()
    return f"{context.deployment}#{context.replica_tag}"


@serve.deployment
class ModelReplica:
    def __init__(self, path: str, settings: EngineSettings, log_level: str = "info") -> None:
        from runtime.engine import load  # ONNX Runtime: only in model replicas, never in the ingress

        configure_logging(log_level)
        self._name = _replica_name()
        self._engine = load(path, settings)
        log.info("model replica %s serves %s", self._name, path)

    def describe(self) -> ModelFacts:
        return ModelFacts(self._engine.info, self._engine.rules)

    async def run(self, request: TaskRequest) -> tuple[str, TaskResult]:
        return self._name, await self._engine.run(request)

    async def stream(self, request: TaskRequest) -> AsyncIterator[ReplicaName | str | TaskResult]:
        yield ReplicaName(self._name)
        async for item in self._engine.stream(request):
            yield item

    async def __del__(self) -> None:
        await self._engine.close()


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        settings: Settings,
        models: Mapping[str, DeploymentHandle],
        app_name: str,
        model_deployments: Sequence[str],
    ) -> None:
        from runtime.server.services import Services

        configure_logging(settings.server.log_level)
        self._name = _replica_name()
        handles = {path: RayModelHandle(handle, wait_s=settings.ray.replica_wait_s) for path, handle in models.items()}
        retry_after_s = settings.limits.retry_after_s

        def connect(path: Path, _settings: EngineSettings) -> Engine:
            handle = handles[str(path)]
            return RemoteEngine(handle, handle.describe(), retry_after_s=retry_after_s)

        self._services = Services(settings, engine_loader=connect)
        self._services.state.probe = ServeProbe(serve.status, app_name, model_deployments)
        self._drain: asyncio.Task[None] | None = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        from runtime.server.app import create_app

        return create_app(self._services)

    async def start_drain(self, timeout_s: float) -> str:
        """From now on /readyz is 503 and new work gets 503 with Retry-After; what is admitted gets ``timeout_s``
        to finish, then is cancelled (answered 503). Returns this replica's name."""
        state = self._services.state
        if self._drain is None:
            state.draining = True
            self._drain = asyncio.create_task(self._finish_admitted(timeout_s))
        return self._name

    async def pending(self) -> tuple[str, int]:
        """This replica's name and its admitted requests (0 once drained)."""
        return self._name, self._services.state.active

    async def _finish_admitted(self, timeout_s: float) -> None:
        state = self._services.state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if state.active:
            log.info("%s: draining %d admitted requests; new requests are answered 503", self._name, state.active)
        while state.active and loop.time() < deadline:  # noqa: ASYNC110 (a counter, not an event)
            await asyncio.sleep(DRAIN_POLL_S)
        if state.active:
            log.warning("%s: %d requests ran past the drain timeout; cancelled (503)", self._name, state.active)
            for task in list(state.requests):
                task.cancel()  # answered 503 by the request-lifetime middleware
