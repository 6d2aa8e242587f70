"""The Ray Serve application: one model deployment per model folder, and the ingress bound to their handles.

``build_application(settings)`` is what ``serve_on_ray`` runs; ``app_builder`` is the import path of the Serve
config file (``deploy/ray/serve.yaml``: ``serve deploy``, KubeRay's RayService), reading the same ``FLORENCE_*``
settings from the environment and the config's ``args``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray.serve import Application

from runtime.cluster.deployments import Ingress, ModelReplica
from runtime.config import Settings, SettingsError, parse_models

APP_NAME = "florence"
INGRESS_NAME = "ingress"
# Health, readiness and metrics are never queued by the server's admission: room for them past its limits.
UNQUEUED_HEADROOM = 32
HEALTH_CHECK_PERIOD_S = 2.0


def model_folders(settings: Settings) -> dict[Path, str]:
    """Each model folder once (several ids may name one), with its deployment's name."""
    folders: dict[Path, str] = {}
    for spec in settings.models:
        if spec.path not in folders:
            folders[spec.path] = f"model-{len(folders)}-{spec.path.name}"
    return folders


def absolute(settings: Settings) -> Settings:
    """Paths as every Ray worker sees them (a worker's working directory is not the caller's)."""
    models = tuple(replace(spec, path=spec.path.resolve()) for spec in settings.models)
    server = replace(settings.server, functions_dir=settings.server.functions_dir.resolve())
    return replace(settings, models=models, server=server)


def replica_engine(settings: Settings) -> Any:
    """The engine settings of a model replica: ONNX Runtime's threads follow the replica's CPUs unless set."""
    engine = settings.effective_engine
    cpus = settings.ray.replica_cpus
    if engine.intra_op_threads == 0 and cpus >= 1:
        engine = replace(engine, intra_op_threads=math.floor(cpus))
    return engine


def cluster_cpus(settings: Settings) -> int:
    """Logical CPUs a local cluster needs for the deployments, so Ray starts no more workers than that."""
    ray = settings.ray
    if ray.cluster_cpus:
        return ray.cluster_cpus
    replicas = max(ray.replicas, ray.max_replicas) * len(model_folders(settings))
    return max(1, math.ceil(replicas * ray.replica_cpus + ray.ingress_replicas * ray.ingress_cpus))


def build_application(settings: Settings) -> Application:
    settings = absolute(settings)
    ray = settings.ray
    limits = settings.limits
    # A replica takes every call the ingresses admit: the router never holds one back for load, so a call that
    # waits for assignment is one that has no live replica (runtime.cluster.ray_handle).
    model_calls = limits.max_concurrent * ray.ingress_replicas
    engine = replica_engine(settings)
    handles: dict[str, Any] = {}
    for path, name in model_folders(settings).items():
        options: dict[str, Any] = {
            "name": name,
            "ray_actor_options": {"num_cpus": ray.replica_cpus, "num_gpus": ray.replica_gpus},
            "max_ongoing_requests": model_calls,
            "health_check_period_s": HEALTH_CHECK_PERIOD_S,
            "graceful_shutdown_timeout_s": settings.server.drain_timeout_s,
        }
        if ray.max_replicas > ray.replicas:
            options["autoscaling_config"] = {
                "min_replicas": ray.replicas,
                "initial_replicas": ray.replicas,
                "max_replicas": ray.max_replicas,
                "target_ongoing_requests": engine.max_batch_size,
            }
        else:
            options["num_replicas"] = ray.replicas
        handles[str(path)] = ModelReplica.options(**options).bind(str(path), engine, settings.server.log_level)
    ingress = Ingress.options(
        name=INGRESS_NAME,
        num_replicas=ray.ingress_replicas,
        ray_actor_options={"num_cpus": ray.ingress_cpus},
        max_ongoing_requests=limits.max_concurrent + limits.max_queued + UNQUEUED_HEADROOM,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        graceful_shutdown_timeout_s=settings.server.drain_timeout_s + 5,
    )
    return ingress.bind(settings, handles, APP_NAME, list(model_folders(settings).values()))


def app_builder(args: Mapping[str, Any]) -> Application:
    """``import_path: runtime.cluster.application:app_builder`` in a Serve config. ``args`` may give ``models``
    (``ID[,ID...]=DIR`` separated by ``;``) and ``replicas``; everything else comes from ``FLORENCE_*``."""
    settings = Settings.from_env()
    if args.get("models"):
        settings = replace(settings, models=parse_models(str(args["models"]).split(";")))
    replicas = int(args.get("replicas", settings.ray.replicas or 1))
    if replicas < 1:
        raise SettingsError(f"replicas={replicas}: give at least 1")
    return build_application(replace(settings, ray=replace(settings.ray, replicas=replicas)))
