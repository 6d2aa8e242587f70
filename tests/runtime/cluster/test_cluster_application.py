"""The Serve application and the deployable configs: options from the settings, and config files Serve accepts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install -e '.[ray]')")
import yaml
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from runtime.cluster.application import app_builder, cluster_cpus, model_folders, replica_engine
from runtime.config import RaySettings, Settings, parse_models

REPO = Path(__file__).resolve().parents[3]
SERVE_CONFIG = REPO / "deploy" / "ray" / "serve.yaml"
RAY_SERVICE = REPO / "deploy" / "kuberay" / "rayservice.yaml"


def configs() -> list[dict]:
    serve_config = yaml.safe_load(SERVE_CONFIG.read_text())
    ray_service = yaml.safe_load(yaml.safe_load(RAY_SERVICE.read_text())["spec"]["serveConfigV2"])
    return [serve_config, ray_service]


@pytest.mark.parametrize("config", configs(), ids=["serve.yaml", "rayservice.yaml"])
def test_the_configs_are_serve_configs_of_this_application(config: dict) -> None:
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "runtime.cluster.application:app_builder"
    settings = replace(Settings(), models=parse_models(str(app.args["models"]).split(";")))
    names = set(model_folders(settings).values()) | {"ingress"}
    assert {deployment.name for deployment in app.deployments} <= names  # overrides name real deployments


def test_the_builder_binds_a_deployment_per_model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLORENCE_RAY_MAX_REPLICAS", "4")
    built = app_builder({"models": f"a,b={tmp_path / 'x'};c={tmp_path / 'y'};d={tmp_path / 'x'}", "replicas": 2})
    assert isinstance(built, Application)
    settings = replace(Settings(), models=parse_models([f"a={tmp_path / 'x'}", f"c={tmp_path / 'y'}"]))
    assert list(model_folders(settings).values()) == ["model-0-x", "model-1-y"]


def test_cluster_cpus_and_replica_threads_follow_the_settings() -> None:
    settings = replace(Settings(), ray=RaySettings(replicas=2, replica_cpus=1.5, ingress_cpus=0.5))
    assert cluster_cpus(settings) == 4  # 2 x 1.5 + 0.5, rounded up
    assert replica_engine(settings).intra_op_threads == 1
    autoscaled = replace(settings, ray=RaySettings(replicas=1, max_replicas=3, replica_cpus=1, cluster_cpus=0))
    assert cluster_cpus(autoscaled) == 4  # room for the largest number of replicas
    assert cluster_cpus(replace(settings, ray=RaySettings(replicas=1, cluster_cpus=16))) == 16
    fractional = replace(settings, ray=RaySettings(replicas=2, replica_cpus=0.5))
    assert replica_engine(fractional).intra_op_threads == 0  # under one CPU: ONNX Runtime decides
