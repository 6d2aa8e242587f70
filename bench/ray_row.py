"""The Ray row: the server on Ray Serve against the direct server, on the same model (the tiny one by default).

- **Overhead**: the server overhead of each (``server_load.measure_overhead``: sequential ``max_tokens=1``
  requests, client latency minus the model time the server reports), the direct server and the Ray path with one
  model replica; the Ray path's extra cost is the difference of the two p50s (the hop from the ingress to the
  replica and back, the image travelling decoded, Serve's proxy in front).
- **Scale-out**: throughput at ``clients`` clients (``server_load.run_level``) with one model replica, then two.
  Each replica gets ``FLORENCE_RAY_REPLICA_CPUS`` (1) and as many ONNX Runtime threads, so two replicas can use
  twice the cores of one; on a machine with fewer free cores than that the ratio says so, it cannot exceed them.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import server_load
from bench.server_process import ServerConfig, ServerProcess

MODEL = "microsoft/Florence-2-large"
OVERHEAD_TARGET_MS = 20.0  # the Ray path's p50 overhead over the direct server (tiny model)
SCALE_TARGET = 1.6  # two replicas' throughput over one's, where the machine has the cores
MIN_TOKENS = 64  # per throughput request: model work, not the HTTP round trip, is what two replicas share out


@dataclass(frozen=True)
class RayPlan:
    model_dir: Path
    clients: int
    max_tokens: int
    requests: int  # per throughput level, at least one per client
    seconds: float  # per throughput level
    overhead_requests: int
    load_timeout_s: float
    request_timeout_s: float


def ray_installed() -> bool:
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        return False
    return True


def _load_plan(plan: RayPlan) -> server_load.ServerPlan:
    return server_load.ServerPlan(
        model_dir=plan.model_dir,
        variant="fp32",
        provider="cpu",
        concurrency=(plan.clients,),
        max_tokens=plan.max_tokens,
        requests_per_level=plan.requests,
        seconds_per_level=plan.seconds,
        overhead_requests=plan.overhead_requests,
        load_timeout_s=plan.load_timeout_s,
        request_timeout_s=plan.request_timeout_s,
        weight_bytes=0,
    )


async def _measure(server: ServerProcess, plan: RayPlan, *, overhead: bool, level: bool) -> dict[str, Any]:
    load = _load_plan(plan)
    result: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s + 30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=plan.clients + 2)) as s:
        result["ready_s"] = await server.wait_ready(s, plan.load_timeout_s)
        if overhead:
            result["overhead"] = await server_load.measure_overhead(s, server.base, MODEL, load)
        if level:
            measured = await server_load.run_level(s, server.base, MODEL, load, plan.clients)
            result["level"] = measured.to_dict()
    return result


def _serve(plan: RayPlan, log_dir: Path, replicas: int, *, overhead: bool, level: bool) -> dict[str, Any]:
    functions_dir = log_dir / "no-functions"
    functions_dir.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(
        model_dir=plan.model_dir,
        variant="fp32",
        provider="cpu",
        max_concurrent=plan.clients,
        max_new_tokens=max(plan.max_tokens, 1),
        request_timeout_s=plan.request_timeout_s,
        ray_replicas=replicas,
    )
    name = f"ray-{replicas}" if replicas else "direct"
    server = ServerProcess(config, log_dir / f"{name}.log", functions_dir)
    try:
        return asyncio.run(_measure(server, plan, overhead=overhead, level=level))
    except (RuntimeError, aiohttp.ClientError, OSError) as exc:
        return {"error": server.exit_reason() or f"{type(exc).__name__}: {exc}"}
    finally:
        server.stop()


def run(plan: RayPlan, log_dir: Path, progress: Any = print) -> dict[str, Any]:
    result: dict[str, Any] = {"model_dir": str(plan.model_dir), "clients": plan.clients, "cpus": os.cpu_count()}
    result["max_tokens"] = plan.max_tokens
    progress("ray row: the direct server")
    direct = _serve(plan, log_dir, 0, overhead=True, level=False)
    progress("ray row: Ray Serve, 1 model replica")
    one = _serve(plan, log_dir, 1, overhead=True, level=True)
    progress("ray row: Ray Serve, 2 model replicas")
    two = _serve(plan, log_dir, 2, overhead=False, level=True)
    result["runs"] = {"direct": direct, "ray_1": one, "ray_2": two}
    errors = [f"{name}: {run['error']}" for name, run in result["runs"].items() if "error" in run]
    if errors:
        result["error"] = "; ".join(errors)
    direct_p50 = (direct.get("overhead") or {}).get("p50_ms")
    ray_p50 = (one.get("overhead") or {}).get("p50_ms")
    result["overhead_p50_ms"] = {
        "direct": direct_p50,
        "ray": ray_p50,
        "ray_over_direct": ray_p50 - direct_p50 if direct_p50 is not None and ray_p50 is not None else None,
    }
    tokens = {
        replicas: (run.get("level") or {}).get("throughput_tokens_per_s") for replicas, run in ((1, one), (2, two))
    }
    result["throughput_tokens_per_s"] = {str(k): v for k, v in tokens.items()}
    result["two_over_one"] = tokens[2] / tokens[1] if tokens[1] and tokens[2] else None
    progress(
        f"ray row: overhead p50 {ray_p50} ms vs {direct_p50} ms direct; "
        f"{plan.clients} clients {tokens[1]} tok/s with 1 replica, {tokens[2]} with 2"
    )
    return result
