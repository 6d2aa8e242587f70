"""Everything one server holds: settings, models, the binding, functions, metrics and lifecycle state.

The HTTP app and ``python -m runtime invoke`` build the same services, so a function behaves alike in both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from runtime.binding import AIBinding, ModelRegistry
from runtime.config import Settings
from runtime.engine.api import Engine
from runtime.engine.settings import EngineSettings
from runtime.errors import RuntimeErrorBase
from runtime.functions import FunctionRunner
from runtime.functions.secrets import register_process_environment
from runtime.media import ImageLoader
from runtime.media.loader import Fetcher
from runtime.media.resolver import Resolver
from runtime.openai import OpenAIServing
from runtime.server.metrics import Metrics
from runtime.server.state import ServerState

log = logging.getLogger(__name__)

EngineLoader = Callable[[Path, EngineSettings], Engine]


def load_onnx_engine(path: Path, settings: EngineSettings) -> Engine:
    from runtime.engine import load  # ONNX Runtime sessions: imported when a model is actually loaded

    return load(path, settings)


class Services:
    def __init__(
        self,
        settings: Settings,
        engine_loader: EngineLoader = load_onnx_engine,
        resolver: Resolver | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        register_process_environment()
        self.settings = settings
        self.state = ServerState()
        self.metrics = Metrics()
        self.registry = ModelRegistry()
        self.images = ImageLoader(settings.media, resolver, fetcher)
        self.binding = AIBinding(self.registry, self.images, settings.limits, on_result=self.metrics.observe_result)
        self.runner = FunctionRunner(
            settings.server.functions_dir,
            self.binding,
            timeout_s=settings.limits.invocation_timeout_s,
            reload=settings.server.reload,
            max_threads=settings.limits.max_concurrent,
        )
        self.serving = OpenAIServing(
            self.binding, settings.limits, on_stream_error=lambda error: self.metrics.errors.labels(error.code).inc()
        )
        self._engine_loader = engine_loader
        self.on_load_failure: Callable[[], None] = lambda: None  # `serve` stops the server: nothing to serve

    async def load_models(self) -> None:
        """Load (and warm) every model off the event loop; ready once all are in."""
        by_path: dict[Path, list[str]] = {}
        for spec in self.settings.models:
            by_path.setdefault(spec.path, []).extend(spec.ids)
        try:
            for path, ids in by_path.items():
                log.info("loading model %s for %s", path, ", ".join(ids))
                started = time.perf_counter()
                engine = await asyncio.to_thread(self._engine_loader, path, self.settings.effective_engine)
                model = self.registry.add(ids, engine, load_s=round(time.perf_counter() - started, 2))
                self.metrics.random_weights.labels(engine.info.name).set(int(engine.info.random_weights))
                if engine.info.random_weights:
                    log.warning(
                        "\n%s\n  SERVING %s (%s) WITH RANDOM WEIGHTS: every answer is noise.\n%s",
                        "!" * 100,
                        path,
                        ", ".join(model.ids),
                        "!" * 100,
                    )
                log.info(
                    "model %s ready as %s (providers: %s)", path, ", ".join(model.ids), ", ".join(engine.info.providers)
                )
        except Exception as exc:
            if isinstance(exc, RuntimeErrorBase):  # ours: the message says what to fix
                self.state.load_error = exc.message
                log.error("loading the models failed: %s", exc.message)
            else:
                self.state.load_error = f"{type(exc).__name__}: {exc}"
                log.exception("loading the models failed")
            self.on_load_failure()
            raise
        self.state.ready = True
        self.metrics.ready.set(1)

    async def close(self) -> None:
        self.state.draining = True
        self.metrics.ready.set(0)
        await self.registry.close()
        await self.images.close()
        self.runner.close()
        log.info("shut down: models and the image fetcher are closed")
