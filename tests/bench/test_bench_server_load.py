"""The load test's measurements against a stand-in server whose timings are known: per-request model time from a
``Server-Timing`` header or from a per-stage histogram of /metrics, batch sizes read from /metrics, and each level's
peak RSS (a fake process whose memory follows the requests in flight) with the KV cache of its largest batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from memory_fakes import FakeMark, FakeProcess, quiet_watch

from bench.flops import TextShape
from bench.kv_cache import DecoderCache
from bench.memory import HWM_SOURCE, MemoryWatch
from bench.prometheus import Histogram
from bench.server_load import ServerPlan, drive, largest_batch, measure_overhead, run_level

MODEL_MS = 40.0  # what the stand-in says its model took: vision 30, encoder 5, decode 5
PREPROCESS_MS = 6.0  # reported, but outside the model
OUTSIDE_MS = 15.0  # what it spends besides the model, preprocessing included
IDLE_RSS = 1000 * 2**20
REQUEST_RSS = 100 * 2**20
PROMPT_TOKENS = 590  # what the stand-in says the encoder saw


def _plan(**overrides: object) -> ServerPlan:
    values: dict[str, object] = {
        "model_dir": Path("."),
        "variant": "fp32",
        "provider": "cpu",
        "concurrency": (1, 4),
        "max_tokens": 8,
        "requests_per_level": 8,
        "seconds_per_level": 30.0,
        "overhead_requests": 4,
        "load_timeout_s": 10.0,
        "request_timeout_s": 10.0,
        "weight_bytes": 1,
    }
    return ServerPlan(**(values | overrides))  # type: ignore[arg-type]


class StandIn:
    """Answers completions after MODEL_MS + OUTSIDE_MS; reports the model time in a header or in /metrics."""

    def __init__(self, timing: str, process: FakeProcess | None = None) -> None:
        self.timing = timing  # header | metrics | none
        self.model_seconds = 0.0
        self.batch_sizes: list[int] = []
        self.in_flight = 0
        self.process = process  # its RSS: IDLE_RSS and REQUEST_RSS per request in flight

    def _memory(self) -> None:
        if self.process is not None:
            self.process.use(IDLE_RSS + REQUEST_RSS * self.in_flight)

    async def completion(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.in_flight += 1
        self._memory()
        self.batch_sizes.append(self.in_flight)
        await asyncio.sleep((MODEL_MS + OUTSIDE_MS) / 1000)  # the serving time being measured, simulated
        self.in_flight -= 1
        self._memory()
        self.model_seconds += MODEL_MS / 1000
        timing = f"queue;dur=1, preprocess;dur={PREPROCESS_MS}, vision;dur=30, encoder;dur=5, decode;dur=5"
        headers = (
            {"Server-Timing": f"{timing}, model;dur={MODEL_MS + PREPROCESS_MS}"} if self.timing == "header" else {}
        )
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": body["max_tokens"], "total_tokens": 0}
        return web.json_response({"usage": usage}, headers=headers)

    async def metrics(self, request: web.Request) -> web.Response:
        lines = ["# TYPE florence_batch_size histogram"]
        for le in (1, 2, 4, 8):
            lines.append(f'florence_batch_size_bucket{{le="{le}.0"}} {sum(b <= le for b in self.batch_sizes)}')
        lines.append(f'florence_batch_size_bucket{{le="+Inf"}} {len(self.batch_sizes)}')
        lines += [
            f"florence_batch_size_count {len(self.batch_sizes)}",
            f"florence_batch_size_sum {sum(self.batch_sizes)}",
        ]
        if self.timing == "metrics":
            lines += [
                "# TYPE florence_stage_seconds histogram",
                f'florence_stage_seconds_bucket{{le="+Inf",stage="vision"}} {len(self.batch_sizes)}',
                f'florence_stage_seconds_count{{stage="vision"}} {len(self.batch_sizes)}',
                f'florence_stage_seconds_sum{{stage="vision"}} {self.model_seconds}',
                f'florence_stage_seconds_bucket{{le="+Inf",stage="queue"}} {len(self.batch_sizes)}',
                f'florence_stage_seconds_count{{stage="queue"}} {len(self.batch_sizes)}',
                f'florence_stage_seconds_sum{{stage="queue"}} {100.0 * len(self.batch_sizes)}',
            ]
        return web.Response(text="\n".join(lines) + "\n")


async def _serve(stand_in: StandIn) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stand_in.completion)
    app.router.add_get("/metrics", stand_in.metrics)
    app.router.add_get("/readyz", lambda _: web.Response(text="ready"))
    app.router.add_get("/v1/models", lambda _: web.json_response({"data": [{"id": "m"}]}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize(
    ("timing", "source"), [("header", "Server-Timing header"), ("metrics", "/metrics stage seconds")]
)
async def test_overhead_is_latency_minus_the_reported_model_time(timing: str, source: str) -> None:
    async for session, base in _serve(StandIn(timing)):
        result = await measure_overhead(session, base, "m", _plan())
    assert result["model_time_source"] == source
    assert result["requests"] == 4
    # the stand-in spends OUTSIDE_MS besides the model (sleep overshoot and loopback HTTP add a little)
    assert OUTSIDE_MS <= result["p50_ms"] < OUTSIDE_MS + 40
    assert result["latency_p50_ms"] >= MODEL_MS + OUTSIDE_MS
    if timing == "header":
        assert result["preprocess_p50_ms"] == PREPROCESS_MS and result["queue_p50_ms"] == 1.0


async def test_overhead_without_a_model_time_says_so_after_one_request() -> None:
    async for session, base in _serve(StandIn("none")):
        result = await measure_overhead(session, base, "m", _plan())
    assert result["requests"] == 1
    assert "p50_ms" not in result and "not measured" in result["note"]


async def test_a_level_counts_requests_tokens_and_batches() -> None:
    stand_in = StandIn("none")
    async for session, base in _serve(stand_in):
        level = (await run_level(session, base, "m", _plan(requests_per_level=8), clients=4)).to_dict()
    assert (level["requests"], level["ok"], level["errors"]) == (8, 8, 0)
    assert level["completion_tokens_mean"] == 8
    assert level["throughput_tokens_per_s"] == pytest.approx(64 / level["wall_s"])
    assert sum(level["batch_sizes"].values()) == 8  # the change of the histogram over the level
    assert level["latency_s"]["p50"] >= (MODEL_MS + OUTSIDE_MS) / 1000


class StandInServer:
    """The ``Served`` seam: the stand-in's address and a memory watch on the fake process."""

    def __init__(self, base: str, memory: MemoryWatch) -> None:
        self.base = base
        self.memory = memory

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float) -> float:
        return 0.0

    def exit_reason(self) -> str | None:
        return None


async def test_each_level_has_its_own_peak_rss_and_kv_cache() -> None:
    process = FakeProcess(IDLE_RSS)
    process.use(IDLE_RSS + 20 * REQUEST_RSS)  # loading: the run's peak, before any level
    process.use(IDLE_RSS)
    stand_in = StandIn("header", process)
    text = TextShape(d_model=64, encoder_layers=2, decoder_layers=2, encoder_ffn=128, decoder_ffn=128, vocab_size=99)
    cache = DecoderCache(text, beams=3, itemsize=4)
    plan = _plan(concurrency=(1, 4), requests_per_level=8, weight_bytes=IDLE_RSS)
    result: dict = {"levels": []}
    watch = quiet_watch(process, FakeMark(process))
    async for _session, base in _serve(stand_in):
        await drive(StandInServer(base, watch), plan, cache, result, lambda message: None)
    one, four = result["levels"]
    assert one["rss"] == {"peak_bytes": IDLE_RSS + REQUEST_RSS, "peak_over_weights": 1.1, "source": HWM_SOURCE}
    assert four["rss"]["peak_bytes"] == IDLE_RSS + 4 * REQUEST_RSS  # not the loading peak, nor the first level's
    assert watch.stop() == IDLE_RSS + 20 * REQUEST_RSS
    assert one["kv_cache"] == cache.at(1, PROMPT_TOKENS, 8).to_dict()
    assert four["batch_size_max"] == 4 and four["kv_cache"] == cache.at(4, PROMPT_TOKENS, 8).to_dict()
    assert four["kv_cache"]["rows"] == 12 and four["kv_cache"]["cross_rows"] == "request"


def test_the_largest_batch_is_its_bucket_bound_at_most_the_clients() -> None:
    def seen(*bounds: float) -> Histogram:  # cumulative counts: one batch in each bucket named
        ordered = (1.0, 2.0, 4.0, 8.0, float("inf"))
        return Histogram(buckets={le: float(sum(b <= le for b in bounds)) for le in ordered})

    assert largest_batch(seen(1, 2, 4), clients=8) == 4
    assert largest_batch(seen(1, 8), clients=6) == 6  # a batch of 5 or 6 falls in the bucket of 8
    assert largest_batch(seen(float("inf")), clients=16) == 16
    assert largest_batch(Histogram(), clients=4) is None
