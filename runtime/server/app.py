"""The Starlette app: routes, middleware, and the lifespan that loads models before the server reports ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from runtime.console.access import console_enabled
from runtime.console.history import InvocationHistory, RequestLogCapture
from runtime.console.recorder import InvocationRecorderMiddleware
from runtime.console.routes import console_entry, console_mount, console_off_mount
from runtime.openai import openai_routes
from runtime.server.admission import AdmissionMiddleware
from runtime.server.body_limit import BodyLimitMiddleware
from runtime.server.errors import ErrorEnvelopeMiddleware, make_http_exception_handler
from runtime.server.http_metrics import HttpMetricsMiddleware
from runtime.server.lifetime import RequestLifetimeMiddleware
from runtime.server.loop_monitor import watch_event_loop
from runtime.server.model_replica import ModelReplicaMiddleware
from runtime.server.openapi import openapi_route
from runtime.server.request_id import RequestIdMiddleware
from runtime.server.routes import function_routes, health_routes
from runtime.server.services import Services

log = logging.getLogger(__name__)


def create_app(services: Services) -> Starlette:
    settings = services.settings
    limits = settings.limits
    history = InvocationHistory()
    log_capture = RequestLogCapture()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services.binding.bind_loop(asyncio.get_running_loop())
        # Loaded in the background: /healthz answers meanwhile and /readyz says 503 until the models are warm.
        loading = asyncio.create_task(services.load_models())
        loading.add_done_callback(_consume_exception)
        monitor = asyncio.create_task(watch_event_loop(services.metrics))
        logging.getLogger().addHandler(log_capture)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(log_capture)
            loading.cancel()
            monitor.cancel()
            await services.close()

    routes = [
        *openai_routes(services.serving),
        *health_routes(services.state, services.metrics, limits.retry_after_s),
        openapi_route(settings),
        console_entry(),
        console_mount(services, history, check_host=settings.server.console is None)
        if console_enabled(settings.server)
        else console_off_mount(),
        *function_routes(services.runner, limits.invocation_timeout_s),
    ]
    # Outermost first: every answer, errors included, carries a request id and is counted.
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(ModelReplicaMiddleware),
        Middleware(HttpMetricsMiddleware, metrics=services.metrics),
        Middleware(InvocationRecorderMiddleware, history=history, capture=log_capture),
        Middleware(
            RequestLifetimeMiddleware,
            state=services.state,
            metrics=services.metrics,
            retry_after_s=limits.retry_after_s,
        ),
        Middleware(ErrorEnvelopeMiddleware, metrics=services.metrics),
        Middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes, metrics=services.metrics),
        Middleware(AdmissionMiddleware, limits=limits, state=services.state, metrics=services.metrics),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: make_http_exception_handler(services.metrics)},
        lifespan=lifespan,
    )
    # Starlette would answer /v1/chat/completions/ with a redirect to a URL built from the Host header, which the
    # client chose; the 404 names the route instead (runtime.server.errors).
    app.router.redirect_slashes = False
    return app


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # logged by load_models; retrieved here so asyncio does not log it again
