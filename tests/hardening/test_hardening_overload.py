"""Overload over loopback: far more concurrent requests than the server admits, and every one gets an answer.

The server runs as its own process (its memory is measured alone). Each request must end in 200, or in 429/503
with Retry-After; none may hang, be dropped or fail otherwise, and the answers must number the requests. The
server's resident memory after the run must stay within RSS_GROWTH_BOUND of what it was after a warm-up (rounds of
load until the RSS stops growing: ONNX Runtime's arenas grow as new batch shapes come, then stay).

``OVERLOAD_REQUESTS`` (5000) and ``OVERLOAD_CONCURRENCY`` (64) size the fake-engine run; ``make soak`` runs
100,000. The tiny-model run is smaller (``OVERLOAD_MODEL_REQUESTS``, 300; then a fifth as many at exactly the
server's capacity, which the model must answer every one of): there the engine, not the HTTP layer, is the
bottleneck.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

import pytest
from hardening_hosts import PHOTO_PNG
from hardening_procs import LoadReport, ServerProcess, load
from hardening_server import HUB_ID
from live_server import call

pytestmark = pytest.mark.slow  # minutes: thousands of requests past capacity, on the fake engine and the tiny model

OVERLOAD_REQUESTS = int(os.environ.get("OVERLOAD_REQUESTS", "5000"))
OVERLOAD_CONCURRENCY = int(os.environ.get("OVERLOAD_CONCURRENCY", "64"))
MODEL_REQUESTS = int(os.environ.get("OVERLOAD_MODEL_REQUESTS", "300"))
MiB = 1024 * 1024
RSS_GROWTH_BOUND = 40 * MiB  # the HTTP layer, on the fake engine
# With the model, ONNX Runtime's CPU arena is a high-water mark: a batch of a shape not seen before may extend it
# once more (by about 100 MiB for the tiny model); it is not a leak, and the soak run shows it level off.
MODEL_RSS_GROWTH_BOUND = 160 * MiB
WARM_RSS_STEP = 4 * MiB
LIMITS = {"FLORENCE_MAX_CONCURRENT": "4", "FLORENCE_MAX_QUEUED": "16", "FLORENCE_RETRY_AFTER_S": "1"}
CAPACITY = 4 + 16
IMAGE = "data:image/png;base64," + base64.b64encode(PHOTO_PNG).decode()


def body(index: int) -> dict[str, Any]:
    text = ("<CAPTION>", "<OD>", "<OCR>")[index % 3]
    return {
        "model": HUB_ID,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": IMAGE}}, {"type": "text", "text": text}],
            }
        ],
        "max_tokens": 2,
    }


def assert_every_request_answered(report: LoadReport, requests: int) -> None:
    print("\n" + report.summary())
    assert len(report.outcomes) == requests
    assert not report.errors, report.errors[:5]
    assert set(report.statuses) <= {200, 429, 503}, report.statuses
    assert report.statuses[200] > 0 and report.statuses[429] > 0, "the load did not reach the limit"
    refused = [o for o in report.outcomes if o.status in (429, 503)]
    assert all(o.retry_after and o.retry_after.isdigit() for o in refused)


def assert_drained(server: ServerProcess) -> None:
    metrics = call(server.url, "GET", "/metrics").body.decode()
    assert "florence_requests_in_flight 0.0" in metrics
    assert "florence_requests_queued 0.0" in metrics
    assert call(server.url, "GET", "/readyz").status == 200


def warm_up(server: ServerProcess, concurrency: int, rounds: int = 8) -> int:
    """Rounds of load until the server's RSS stops growing (ONNX Runtime's arenas grow as new batch shapes come,
    then stay); the RSS then."""
    rss, steady = server.rss_bytes(), 0
    for _ in range(rounds):
        warm = asyncio.run(load(server.url, body, requests=300, concurrency=concurrency))
        assert not warm.errors
        previous, rss = rss, server.rss_bytes()
        steady = steady + 1 if rss - previous < WARM_RSS_STEP else 0
        if steady == 2:
            return rss
    raise AssertionError(f"the server's RSS still grows after {rounds} warm-up rounds: {rss / MiB:.0f} MiB")


def run_load(server: ServerProcess, requests: int, concurrency: int) -> tuple[LoadReport, int, int]:
    before = warm_up(server, concurrency)
    report = asyncio.run(load(server.url, body, requests=requests, concurrency=concurrency))
    after = server.rss_bytes()
    print(f"server RSS {before / MiB:.1f} MiB before, {after / MiB:.1f} MiB after")
    return report, before, after


@pytest.mark.timeout(600)
def test_overload_on_the_fake_engine(tmp_path: Path) -> None:
    env = {**LIMITS, "FLORENCE_FUNCTIONS_DIR": str(tmp_path), "FLORENCE_LOG_LEVEL": "warning"}
    with ServerProcess.fake_engine(env, tmp_path / "server.log") as server:
        report, before, after = run_load(server, OVERLOAD_REQUESTS, OVERLOAD_CONCURRENCY)
        assert_every_request_answered(report, OVERLOAD_REQUESTS)
        assert after - before <= RSS_GROWTH_BOUND, (before, after)
        assert_drained(server)
        assert "Traceback" not in server.log()


@pytest.mark.timeout(600)
def test_overload_on_the_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    env = {
        **LIMITS,
        "FLORENCE_MAX_NEW_TOKENS": "4",
        "FLORENCE_ENGINE_MAX_BATCH_SIZE": "4",
        "FLORENCE_LOG_LEVEL": "warning",
    }
    with ServerProcess.tiny_model(tiny_model_dir, tmp_path, env, tmp_path / "server.log") as server:
        report, before, _ = run_load(server, MODEL_REQUESTS, 32)
        assert_every_request_answered(report, MODEL_REQUESTS)
        # Then exactly at capacity (4 running, 16 queued): every request is admitted and the model answers it.
        steady = asyncio.run(load(server.url, body, requests=MODEL_REQUESTS // 5, concurrency=CAPACITY))
        print(steady.summary())
        assert steady.statuses == {200: MODEL_REQUESTS // 5}, steady.summary()
        after = server.rss_bytes()
        print(f"server RSS after the run at capacity {after / MiB:.1f} MiB")
        assert after - before <= MODEL_RSS_GROWTH_BOUND, (before, after)
        assert_drained(server)
        assert "Traceback" not in server.log()
