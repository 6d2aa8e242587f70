"""``python -m runtime serve --ray-replicas N [--ray-address ADDR]``: deploy the server on Ray Serve and drain it.

Without an address a local cluster is started with as many logical CPUs as the deployments ask for; with one,
the application joins that cluster (and leaves it on shutdown; the cluster stays). Serve's HTTP proxy listens on
the server's host and port.

On SIGTERM (or SIGINT) every ingress replica drains as the direct server does: /readyz says 503 at once, new work
is answered 503 with Retry-After, admitted requests get ``FLORENCE_DRAIN_TIMEOUT_S`` and are cancelled (503) past
it. Then the application is removed. A second signal skips what is left of the wait.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from runtime.config import Settings

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "runtime.cluster.proxy:middlewares"
DRAIN_POLL_S = 0.1
DRAIN_SLACK_S = 10.0
CALL_TIMEOUT_S = 10.0
MAX_DRAIN_CALLS = 20  # per ingress replica: Serve routes each call to one replica, chosen by its load


class RayMissing(RuntimeError):
    """The ray extra is not installed."""


def serve_on_ray(settings: Settings) -> int:
    try:
        import ray
        from ray import serve
    except ImportError:
        raise RayMissing(
            "serving on Ray needs the ray extra: make install (or, in your own venv, pip install -e '.[ray]')"
        ) from None
    from runtime.cluster.application import APP_NAME, absolute, build_application, cluster_cpus

    settings = absolute(settings)
    if settings.ray.address:
        ray.init(address=settings.ray.address, log_to_driver=True)
    else:
        _local_worker_environment()
        ray.init(address="local", num_cpus=cluster_cpus(settings), include_dashboard=False, log_to_driver=True)
    stop = _StopSignals()
    try:
        server = settings.server
        serve.start(http_options={"host": server.host, "port": server.port})
        try:
            ingress = serve.run(build_application(settings), name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:
            log.error("the Ray Serve application failed to deploy: %s", exc)
            return 1
        log.info(
            "serving on http://%s:%d through Ray Serve: %d model replica(s) per model, %d ingress replica(s)",
            server.host,
            server.port,
            settings.ray.replicas,
            settings.ray.ingress_replicas,
        )
        stop.wait()
        # In a thread, bounded: a cluster that lost its processes must not hold the shutdown forever.
        drain = threading.Thread(target=_drain, args=(ingress, settings, stop), name="drain", daemon=True)
        drain.start()
        drain.join(settings.server.drain_timeout_s + DRAIN_SLACK_S)
        if drain.is_alive():
            log.error("the drain did not finish (is the cluster still up?); removing the application anyway")
        return 0
    finally:
        if settings.ray.address:
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
        ray.shutdown()


def _local_worker_environment() -> None:
    """What the processes ``ray.init`` starts inherit: workers import this very tree (not another install of the
    package), and Serve's HTTP proxy loads our middleware (runtime.cluster.proxy)."""
    paths = [str(PROJECT_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault(PROXY_CALLBACK_VARIABLE, PROXY_CALLBACK)


def _drain(ingress: Any, settings: Settings, stop: _StopSignals) -> None:
    timeout_s = settings.server.drain_timeout_s
    replicas: set[str] = set()
    for _ in range(MAX_DRAIN_CALLS * settings.ray.ingress_replicas):
        replicas.add(ingress.start_drain.remote(timeout_s).result(timeout_s=CALL_TIMEOUT_S))
        if len(replicas) >= settings.ray.ingress_replicas:
            break
    log.info("draining %d ingress replica(s) for up to %g s", len(replicas), timeout_s)
    deadline = time.monotonic() + timeout_s + 1
    pending = dict.fromkeys(replicas, 1)
    while any(pending.values()) and time.monotonic() < deadline and not stop.forced:
        name, active = ingress.pending.remote().result(timeout_s=CALL_TIMEOUT_S)
        pending[name] = active
        time.sleep(DRAIN_POLL_S)
    log.info("drained; removing the application")


class _StopSignals:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.forced = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():
            self.forced = True
            log.warning("second signal: not waiting for the drain")
        self._event.set()

    def wait(self) -> None:
        while not self._event.wait(0.5):
            pass
