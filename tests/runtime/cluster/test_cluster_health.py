"""/readyz through Ray: ready only while every model deployment has a running replica (no Ray needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from runtime.cluster.health import ServeProbe, unready_reason
from runtime.cluster.proxy import first_request_id_only


def status(**running: int) -> Any:
    deployments = {name: SimpleNamespace(replica_states={"RUNNING": n, "STARTING": 1}) for name, n in running.items()}
    return SimpleNamespace(applications={"florence": SimpleNamespace(deployments=deployments)})


def test_ready_when_every_model_deployment_has_a_running_replica() -> None:
    assert unready_reason(status(ingress=1, **{"model-0": 2, "model-1": 1}), "florence", ["model-0", "model-1"]) is None


def test_not_ready_names_the_deployments_without_one() -> None:
    reason = unready_reason(status(ingress=1, **{"model-0": 0, "model-1": 1}), "florence", ["model-0", "model-1"])
    assert reason is not None and "model-0" in reason and "model-1" not in reason
    assert "model-2" in (unready_reason(status(**{"model-0": 1}), "florence", ["model-2"]) or "")
    assert "not deployed" in (unready_reason(status(), "other", ["model-0"]) or "")


async def test_probe_reports_an_unreachable_controller() -> None:
    def unreachable() -> Any:
        raise ConnectionError("controller gone")

    reason = await ServeProbe(unreachable, "florence", ["model-0"])()
    assert reason is not None and "controller gone" in reason
    assert await ServeProbe(lambda: status(**{"model-0": 1}), "florence", ["model-0"])() is None


def test_the_proxy_keeps_one_request_id() -> None:
    headers = [(b"content-type", b"application/json"), (b"x-request-id", b"ours"), (b"X-Request-ID", b"theirs")]
    assert first_request_id_only(headers) == [(b"content-type", b"application/json"), (b"x-request-id", b"ours")]
    assert first_request_id_only(headers[:2]) == headers[:2]
