"""The server on Ray Serve (a local cluster, the tiny model, 2 model replicas) over real HTTP: the same contract as
the direct server, both replicas in use, a replica killed under load, no replica left, and the SIGTERM drain.

One server for the module; the tests run in file order and the drain test, last, stops it. Skipped only when the
``ray`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import psutil
import pytest
from fakes import payload
from live_server import call, metric
from ray_server import MODEL_ID, RayServer
from waiting import wait_until

pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install -e '.[ray]')")
pytestmark = pytest.mark.slow  # about 100 s: a local Ray cluster starts, replicas restart twice, a function times out

REPLICAS = 2
MAX_CONCURRENT = 4
MAX_QUEUED = 2
RETRY_AFTER_S = 2
REPLICA_WAIT_S = 1.0  # shorter than a replica's restart (a new process, ONNX Runtime, the model, its warm-up)
INVOCATION_TIMEOUT_S = 25  # above the longest request here (a long one sent twice around a kill), on a busy machine
# ignore_eos: 3.5 s of greedy decoding on the tiny model in one idle process, longer on a replica's half core; the
# kills happen once the requests are seen in flight, well before that
LONG_TOKENS = 1000
FUNCTION = (
    "async def fetch(request, env, ctx):\n"
    "    answer = await AI.run('microsoft-florence-2-large', await request.json())\n"
    "    return {'text': answer['choices'][0]['message']['content']}\n"
)


HANGING = "import asyncio\nasync def fetch(request, env, ctx):\n    await asyncio.sleep(3600)\n"


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServer]:
    folder = tmp_path_factory.mktemp("ray-functions")
    (folder / "describe.py").write_text(FUNCTION)
    (folder / "hanging.py").write_text(HANGING)
    env = {
        "FLORENCE_MAX_CONCURRENT": str(MAX_CONCURRENT),
        "FLORENCE_MAX_QUEUED": str(MAX_QUEUED),
        "FLORENCE_RETRY_AFTER_S": str(RETRY_AFTER_S),
        "FLORENCE_RAY_REPLICA_WAIT_S": str(REPLICA_WAIT_S),
        "FLORENCE_DRAIN_TIMEOUT_S": "30",
        "FLORENCE_INVOCATION_TIMEOUT_S": str(INVOCATION_TIMEOUT_S),
        "FLORENCE_RAY_REPLICA_CPUS": "0.5",  # two replicas and the ingress on a 2-core machine
        "RAY_DEDUP_LOGS": "0",  # every replica's "serves" line reaches the log (server.replicas() reads them)
    }
    ray_server = RayServer(tiny_model_dir, folder, REPLICAS, env, tmp_path_factory.mktemp("ray-log") / "server.log")
    try:
        yield ray_server.wait_ready()
    finally:
        ray_server.stop()


def completion(text: str = "<CAPTION>", **extra: object) -> dict[str, Any]:
    """A /v1/chat/completions body (the HTTP API names the model)."""
    return {"model": MODEL_ID, **payload(text, **extra)}


def long_payload(tokens: int = LONG_TOKENS) -> dict[str, Any]:
    return completion(max_tokens=tokens, ignore_eos=True, num_beams=1)


async def post_all(url: str, bodies: list[dict[str, Any]], path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    """POST every body at once; each reply's status, headers and JSON (bounded by a client timeout)."""

    async def one(session: aiohttp.ClientSession, index: int, body: dict[str, Any]) -> dict[str, Any]:
        async with session.post(url + path, json=body, headers={"X-Request-Id": f"req-{index}"}) as response:
            return {"status": response.status, "headers": response.headers, "body": await response.json()}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        return await asyncio.gather(*(one(session, i, body) for i, body in enumerate(bodies)))


async def until_in_flight(server: RayServer, count: int, timeout_s: float = 30) -> None:
    """Wait until ``count`` requests hold a slot at the ingress (its /metrics), so they are on their replicas."""

    def held() -> float:
        return metric(server.url, "florence_requests_in_flight")

    await asyncio.to_thread(wait_until, lambda: held() >= count, lambda: f"{count} requests to hold a slot", timeout_s)


def ready(server: RayServer) -> bool:
    return call(server.url, "GET", "/readyz", timeout_s=5).status == 200


def test_curl_completion_errors_and_request_ids(server: RayServer) -> None:
    body = json.dumps({**completion(max_tokens=8), "model": "microsoft/Florence-2-large"})
    command = ["curl", "-sS", "-i", "-X", "POST", f"{server.url}/v1/chat/completions"]
    command += ["-H", "Content-Type: application/json", "-H", "X-Request-Id: curl-1", "-d", body]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    head, _, text = out.partition("\n\n")  # text mode: curl's CRLF read as LF
    assert head.startswith("HTTP/1.1 200")
    header_lines = [line.lower() for line in head.split("\n")]
    assert header_lines.count("x-request-id: curl-1") == 1  # once: Ray's proxy copy is dropped
    assert any(line.startswith("x-model-replica: model-0-") for line in header_lines)
    answer = json.loads(text)
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] > 0

    unknown = call(server.url, "POST", "/v1/chat/completions", json_body={**completion(), "model": "nope"})
    assert unknown.status == 404 and unknown.error["code"] == "model_not_found"
    assert "x-model-replica" not in unknown.headers
    bad = call(
        server.url, "POST", "/v1/chat/completions", json_body=completion("<CAPTION>x"), headers={"X-Request-Id": "a b"}
    )
    assert bad.status == 400 and bad.error["code"] == "invalid_payload"
    assert bad.headers["x-request-id"] != "a b" and "," not in bad.headers["x-request-id"]
    # The SSRF guard stays at the ingress: a loopback image URL is refused before any fetch.
    ssrf = call(server.url, "POST", "/v1/chat/completions", json_body=completion(url="http://127.0.0.1:1/cat.png"))
    assert ssrf.status == 400 and ssrf.error["code"] == "forbidden_address"
    stream = call(server.url, "POST", "/v1/chat/completions", json_body=completion("<OD>", stream=True))
    assert stream.status == 400 and stream.error["code"] == "stream_not_supported"
    assert call(server.url, "GET", "/nope-function").status == 404
    assert call(server.url, "GET", "/healthz").status == 200
    assert b"florence_http_requests_total" in call(server.url, "GET", "/metrics").body


def test_openai_sdk_streaming_and_not(server: RayServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=60)
    messages = payload(max_tokens=12)["messages"]
    whole = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=12)  # type: ignore[arg-type]
    assert whole.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy on the same replica build: the same answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_concurrent_requests_reach_both_replicas_and_functions_too(server: RayServer) -> None:
    seen: Counter[str] = Counter()
    for _ in range(10):  # bounded: Serve picks the less loaded of two random replicas per request
        replies = asyncio.run(post_all(server.url, [completion(max_tokens=24, ignore_eos=True)] * MAX_CONCURRENT))
        assert {reply["status"] for reply in replies} == {200}
        seen.update(reply["headers"]["X-Model-Replica"] for reply in replies)
        if len(seen) >= REPLICAS:
            break
    assert len(seen) == REPLICAS, seen
    assert set(seen) == set(server.replicas().values())
    (function_reply,) = asyncio.run(post_all(server.url, [payload(max_tokens=8)], path="/describe"))
    assert function_reply["status"] == 200 and function_reply["body"]["text"]
    assert function_reply["headers"]["X-Model-Replica"] in seen


def test_overload_is_429_with_retry_after(server: RayServer) -> None:
    burst = MAX_CONCURRENT + MAX_QUEUED + 4
    replies = asyncio.run(post_all(server.url, [long_payload(60)] * burst))
    statuses = Counter(reply["status"] for reply in replies)
    assert set(statuses) <= {200, 429} and statuses[429] >= 1 and statuses[200] >= MAX_CONCURRENT, statuses
    for reply in replies:
        if reply["status"] == 429:
            assert reply["headers"]["Retry-After"] == str(RETRY_AFTER_S)
            assert reply["body"]["error"]["code"] == "overloaded"


def test_a_hanging_function_is_408(server: RayServer) -> None:
    started = time.monotonic()
    reply = call(server.url, "GET", "/hanging", timeout_s=INVOCATION_TIMEOUT_S + 30)
    assert reply.status == 408 and reply.error["code"] == "timeout"
    assert INVOCATION_TIMEOUT_S <= time.monotonic() - started < INVOCATION_TIMEOUT_S + 30


def _busiest(pids: list[int], window_s: float = 0.5) -> int:
    before = {pid: sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids}
    time.sleep(window_s)  # CPU time is measured over a window: the window is the measurement, not an ordering
    return max(pids, key=lambda pid: sum(psutil.Process(pid).cpu_times()[:2]) - before[pid])


def test_a_replica_killed_under_load_is_restarted_and_its_requests_retried(server: RayServer) -> None:
    replicas = server.replicas()
    assert len(replicas) == REPLICAS

    async def kill_busy_replica_mid_way() -> tuple[list[dict[str, Any]], str]:
        load = asyncio.create_task(post_all(server.url, [long_payload()] * MAX_CONCURRENT))
        await until_in_flight(server, MAX_CONCURRENT)
        victim = await asyncio.to_thread(_busiest, list(replicas))
        assert not load.done(), "the requests ended before the kill: raise LONG_TOKENS"
        os.kill(victim, signal.SIGKILL)
        return await load, replicas[victim]

    replies, victim_name = asyncio.run(kill_busy_replica_mid_way())
    assert [reply["status"] for reply in replies] == [200] * MAX_CONCURRENT, replies
    answered_by = {reply["headers"]["X-Model-Replica"] for reply in replies}
    assert victim_name not in answered_by  # every request the dead replica held was answered by another
    assert "sending it once more" in server.log()
    # Ray restarts it: two running replicas again, one of them new.
    wait_until(lambda: len(server.replicas()) == REPLICAS and ready(server), "the replica's restart", 120)
    assert victim_name not in server.replicas().values()


def test_no_replica_left_is_503_with_retry_after_and_not_ready(server: RayServer) -> None:
    async def kill_all_mid_way() -> list[dict[str, Any]]:
        load = asyncio.create_task(post_all(server.url, [long_payload()] * 2))
        await until_in_flight(server, 2)
        for pid in server.replicas():
            os.kill(pid, signal.SIGKILL)
        return await load

    started = time.monotonic()
    replies = asyncio.run(kill_all_mid_way())
    assert time.monotonic() - started < 60  # nothing hangs on the dead replicas
    for reply in replies:
        assert reply["status"] == 503, reply
        assert reply["headers"]["Retry-After"] == str(RETRY_AFTER_S)
        assert reply["body"]["error"]["code"] == "unavailable"
    # The controller sees the deaths at its next health check; the restarts take longer than that.
    wait_until(lambda: not ready(server), "/readyz to say 503 while no replica runs", 15)
    readiness = call(server.url, "GET", "/readyz", timeout_s=5)
    assert readiness.status == 503 and "no healthy replica" in readiness.error["message"]
    wait_until(lambda: len(server.replicas()) == REPLICAS and ready(server), "the replicas' restart", 180)
    after = call(server.url, "POST", "/v1/chat/completions", json_body=completion(max_tokens=8))
    assert after.status == 200


def test_sigterm_drains_admitted_requests_then_exits(server: RayServer) -> None:
    async def terminate_under_load() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        load = asyncio.create_task(post_all(server.url, [long_payload()] * 2))
        await until_in_flight(server, 2)
        server.terminate()
        await asyncio.to_thread(wait_until, lambda: not ready(server), "/readyz to say 503", 15)
        late = await post_all(server.url, [completion(max_tokens=8)])
        answered = await load
        code = await asyncio.to_thread(server.process.wait, 90)
        return answered, late, code

    answered, late, code = asyncio.run(terminate_under_load())
    assert [reply["status"] for reply in answered] == [200, 200]  # admitted before SIGTERM: finished
    assert late[0]["status"] == 503 and late[0]["headers"]["Retry-After"] == str(RETRY_AFTER_S)
    assert code == 0
