"""The server over real HTTP (uvicorn on a loopback port) with a fake engine: every status of the error table."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, data_url, image_bytes, payload
from live_server import LiveServer, Reply, call, write_functions
from waiting import wait_until

from runtime.config import Limits, MediaSettings, ModelSpec, ServerSettings, Settings
from runtime.engine.settings import EngineSettings
from runtime.errors import ModelLoadFailed
from runtime.server.services import Services

MODEL = "microsoft/Florence-2-large"

FUNCTIONS = {
    "hello.py": "async def fetch(request, env, ctx):\n    return {'hello': request.url.path}\n",
    "sleepy.py": "import asyncio\nasync def fetch(request, env, ctx):\n"
    "    await asyncio.sleep(float(request.query_params.get('s', '0.5')))\n    return 'slept'\n",
    "hang.py": "import asyncio\nasync def fetch(request, env, ctx):\n    await asyncio.sleep(3600)\n",
    "raises.py": "async def fetch(request, env, ctx):\n    raise RuntimeError('function bug')\n",
    "broken.py": "def fetch(request, env, ctx) return 1\n",
    "later.py": "import pathlib\nasync def write(path):\n    pathlib.Path(path).write_text('after')\n"
    "async def fetch(request, env, ctx):\n    ctx.wait_until(write(request.query_params['path']))\n    return 'now'\n",
    "caption.py": "async def fetch(request, env, ctx):\n"
    "    body = await request.json()\n"
    "    return await AI.run('microsoft-florence-2-large', body)\n",
}


def _settings(functions_dir: Path, **limits: Any) -> Settings:
    return Settings(
        server=ServerSettings(functions_dir=functions_dir, reload=True),
        limits=Limits(
            **{"max_body_bytes": 200_000, "invocation_timeout_s": 1.0, "max_concurrent": 2, "max_queued": 1, **limits}
        ),
        media=MediaSettings(max_image_bytes=50_000),
        models=(ModelSpec(ids=("microsoft-florence-2-large",), path=Path("/models/fake")),),
    )


class Loader:
    def __init__(self, engine: FakeEngine, gate: threading.Event | None = None) -> None:
        self.engine = engine
        self.gate = gate

    def __call__(self, path: Path, settings: EngineSettings) -> FakeEngine:
        if self.gate is not None:
            self.gate.wait(30)
        return self.engine


@pytest.fixture(scope="module")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_functions(tmp_path_factory.mktemp("functions"), FUNCTIONS)


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine(random_weights=True)


@pytest.fixture(scope="module")
def server(functions_dir: Path, engine: FakeEngine) -> Iterator[LiveServer]:
    with LiveServer(Services(_settings(functions_dir), engine_loader=Loader(engine))) as live:
        yield live


def _post(server: LiveServer, body: Any, **kwargs: Any) -> Reply:
    return call(server.url, "POST", "/v1/chat/completions", json_body=body, **kwargs)


def _assert_envelope(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    error = reply.error
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code and error["message"]
    return error


def test_health_ready_and_request_ids(server: LiveServer) -> None:
    reply = call(server.url, "GET", "/healthz")
    assert reply.status == 200 and reply.json() == {"status": "ok"}
    assert len(reply.headers["x-request-id"]) == 32
    reply = call(server.url, "GET", "/readyz", headers={"X-Request-Id": "my-id-1"})
    assert reply.status == 200 and reply.headers["x-request-id"] == "my-id-1"
    reply = call(server.url, "GET", "/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert reply.headers["x-request-id"] != "bad id with spaces"


def test_models(server: LiveServer) -> None:
    reply = call(server.url, "GET", "/v1/models")
    data = reply.json()["data"]
    assert [m["id"] for m in data] == ["microsoft-florence-2-large", MODEL]
    assert all(m["object"] == "model" and m["random_weights"] is True for m in data)


def test_completion(server: LiveServer) -> None:
    reply = _post(server, {"model": MODEL, **payload("<CAPTION>")})
    assert reply.status == 200
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == "a red image of 64 by 48 pixels"
    assert body["model"] == MODEL and body["usage"]["total_tokens"] == 18


def test_400_invalid_payload(server: LiveServer) -> None:
    error = _assert_envelope(_post(server, {"model": MODEL, **payload("<NOPE>")}), 400, "invalid_payload")
    assert error["param"] == "messages[0].content[1].text" and error["type"] == "invalid_request_error"
    error = _assert_envelope(_post(server, payload()), 400, "invalid_payload")
    assert error["param"] == "model"


def test_400_bad_json_and_415_content_type(server: LiveServer) -> None:
    reply = call(
        server.url, "POST", "/v1/chat/completions", body=b"{not json", headers={"Content-Type": "application/json"}
    )
    _assert_envelope(reply, 400, "invalid_request")
    reply = call(
        server.url,
        "POST",
        "/v1/chat/completions",
        body=b"a=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _assert_envelope(reply, 415, "unsupported_media_type")


def test_400_stream_of_structured_task(server: LiveServer) -> None:
    reply = _post(server, {"model": MODEL, **payload("<OD>", stream=True)})
    assert _assert_envelope(reply, 400, "stream_not_supported")["param"] == "stream"


def test_404s(server: LiveServer) -> None:
    error = _assert_envelope(_post(server, {"model": "gpt-4o", **payload()}), 404, "model_not_found")
    assert "microsoft-florence-2-large" in error["message"]
    error = _assert_envelope(call(server.url, "GET", "/no-such-function/x"), 404, "function_not_found")
    assert "hello" in error["message"]
    _assert_envelope(call(server.url, "GET", "/"), 404, "not_found")
    _assert_envelope(call(server.url, "GET", "/v1/chat/completions"), 405, "method_not_allowed")


def test_408_hanging_function_next_to_a_healthy_one(server: LiveServer) -> None:
    _assert_envelope(call(server.url, "GET", "/hang"), 408, "timeout")
    reply = call(server.url, "GET", "/hello/sub/path")
    assert reply.status == 200 and reply.json() == {"hello": "/hello/sub/path"}


def test_500_raising_and_broken_functions_next_to_a_healthy_one(server: LiveServer) -> None:
    error = _assert_envelope(call(server.url, "GET", "/raises"), 500, "function_error")
    assert "RuntimeError: function bug" in error["message"] and "Traceback" not in error["message"]
    error = _assert_envelope(call(server.url, "POST", "/broken"), 500, "function_error")
    assert "failed to import: SyntaxError" in error["message"]
    assert call(server.url, "GET", "/hello").status == 200


def test_500_for_our_bugs_hides_the_details(server: LiveServer, engine: FakeEngine) -> None:
    engine.fail_with = ZeroDivisionError("internal detail")
    try:
        error = _assert_envelope(_post(server, {"model": MODEL, **payload()}), 500, "internal_error")
    finally:
        engine.fail_with = None
    assert "internal detail" not in error["message"]


def test_413_body_declared_and_streamed(server: LiveServer) -> None:
    big = {"model": MODEL, **payload(url=data_url(b"\0" * 300_000))}
    error = _assert_envelope(_post(server, big), 413, "payload_too_large")
    assert "FLORENCE_MAX_BODY_BYTES" in error["message"]
    chunks = iter([b'{"model": "x", "pad": "', b"a" * 150_000, b"a" * 150_000, b'"}'])
    reply = call(server.url, "POST", "/hello", body=chunks, headers={"Transfer-Encoding": "chunked"})
    # The body is read before the request is admitted (runtime.server.admission), whether the function reads it or not.
    _assert_envelope(reply, 413, "payload_too_large")
    reply = call(
        server.url,
        "POST",
        "/v1/chat/completions",
        body=iter([b'{"model": "x", "pad": "', b"a" * 150_000, b"a" * 150_000, b'"}']),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
    )
    _assert_envelope(reply, 413, "payload_too_large")


def test_413_and_415_images(server: LiveServer) -> None:
    big_image = image_bytes(size=(400, 400), fmt="BMP")  # 480 kB, over the 50 kB image limit, under the body limit
    assert len(big_image) > 50_000
    reply = _post(server, {"model": MODEL, **payload(url=data_url(big_image[:60_000], "image/bmp"))})
    _assert_envelope(reply, 413, "payload_too_large")
    reply = _post(server, {"model": MODEL, **payload(url=data_url(b"<svg></svg>", "image/svg+xml"))})
    _assert_envelope(reply, 415, "unsupported_media_type")


def test_429_over_capacity_with_retry_after(server: LiveServer) -> None:
    replies: list[Reply] = []
    threads = [
        threading.Thread(target=lambda: replies.append(call(server.url, "GET", "/sleepy?s=0.6"))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: server.sample("florence_requests_in_flight") == 2 and server.sample("florence_requests_queued") == 1,
        "two requests running and one queued",
    )
    overloaded = call(server.url, "GET", "/hello")
    for thread in threads:
        thread.join()
    _assert_envelope(overloaded, 429, "overloaded")
    assert overloaded.headers["retry-after"] == "1"
    assert sorted(r.status for r in replies) == [200, 200, 200]
    assert call(server.url, "GET", "/healthz").status == 200


def test_function_calls_the_binding(server: LiveServer) -> None:
    reply = call(server.url, "POST", "/caption", json_body=payload("<OD>"))
    assert reply.status == 200
    assert reply.json()["result"]["<OD>"]["labels"] == ["red", "half"]
    _assert_envelope(call(server.url, "POST", "/caption", json_body=payload("<CAP>")), 400, "invalid_payload")


def test_wait_until_runs_after_the_response(server: LiveServer, tmp_path: Path) -> None:
    target = tmp_path / "after.txt"
    reply = call(server.url, "GET", f"/later?path={target}")
    assert reply.status == 200 and reply.body == b"now"
    wait_until(lambda: target.exists() and target.read_text(), f"the wait_until work to write {target}", 5)
    assert target.read_text() == "after"


def test_sse_stream(server: LiveServer) -> None:
    reply = _post(server, {"model": MODEL, **payload(stream=True)})
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in reply.body.decode().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "a red image of 64 by 48 pixels"


def test_metrics(server: LiveServer) -> None:
    _post(server, {"model": MODEL, **payload()})
    _post(server, {"model": MODEL, **payload("<BAD>")})
    text = call(server.url, "GET", "/metrics").body.decode()
    assert 'florence_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert 'florence_errors_total{code="invalid_payload"}' in text
    assert 'florence_tokens_generated_total{model="fake"}' in text
    assert 'florence_batch_size_bucket{le="1.0",model="fake"}' in text
    assert "florence_http_request_duration_seconds_bucket" in text
    assert "florence_requests_queued 0.0" in text
    assert "florence_ready 1.0" in text
    assert 'florence_model_random_weights{model="fake"} 1.0' in text
    assert 'route="/no-such-function' not in text  # unknown paths do not add series


def test_503_until_ready_then_ready(functions_dir: Path) -> None:
    gate = threading.Event()
    engine = FakeEngine()
    live = LiveServer(Services(_settings(functions_dir), engine_loader=Loader(engine, gate)), wait_ready=False).start()
    try:
        assert call(live.url, "GET", "/healthz").status == 200
        reply = call(live.url, "GET", "/readyz")
        assert "loading" in _assert_envelope(reply, 503, "unavailable")["message"]
        reply = call(live.url, "GET", "/hello")
        _assert_envelope(reply, 503, "unavailable")
        assert reply.headers["retry-after"] == "1"
        gate.set()
        wait_until(lambda: call(live.url, "GET", "/readyz").status == 200, "/readyz to say 200", 10)
        assert call(live.url, "GET", "/hello").status == 200
    finally:
        gate.set()
        live.stop()


def test_graceful_shutdown_drains_in_flight_requests(functions_dir: Path) -> None:
    engine = FakeEngine()
    live = LiveServer(Services(_settings(functions_dir), engine_loader=Loader(engine))).start()
    replies: list[Reply] = []
    slow = threading.Thread(target=lambda: replies.append(call(live.url, "GET", "/sleepy?s=0.8")))
    slow.start()
    wait_until(lambda: live.sample("florence_requests_in_flight") == 1, "the slow request to be running")
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    wait_until(lambda: live.services.state.draining, "the server to start draining")
    refused = _post(live, {"model": MODEL, **payload("<CAPTION>")})  # new work while draining: 503, go elsewhere
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    assert refused.headers["connection"] == "close"
    slow.join()
    stopper.join()
    assert replies[0].status == 200 and replies[0].body == b"slept"
    assert live.stopped and engine.closed


def test_a_model_that_fails_to_load_stops_the_server(functions_dir: Path) -> None:
    def failing(path: Path, settings: EngineSettings) -> FakeEngine:
        raise ModelLoadFailed("tokenizer.json is missing from the model folder; re-export the model")

    live = LiveServer(Services(_settings(functions_dir), engine_loader=failing))
    with pytest.raises(RuntimeError, match=r"tokenizer\.json is missing"):
        live.start()
    live.stop()
    assert live.stopped and live.services.state.load_error is not None
