"""The real HTTP server under load: one server process, aiohttp clients on loopback, bounded in count and time.

For each concurrency level, that many clients send the same chat completion (the benchmark image as a
``data:`` URL, 1024x768 JPEG, and the task tag) back to back, until the level's request budget is spent or its
time bound has passed; requests in flight then finish. Reported per level: throughput (requests and completion
tokens per second over the level's wall time), client-side latency percentiles, errors, and the batch sizes the
engine formed (the change of the ``florence_batch_size`` histogram of ``/metrics`` over the level).

Server overhead, the time a request spends outside the model (HTTP, JSON, validation, ``data:`` URL and JPEG
decoding, preprocessing, waiting for its batch to close, post-processing, serialisation), is measured per request:
sequential requests with ``max_tokens=1`` (so that a noisy model time is as short as it can be), each one's
client-side latency minus the model time the server reports for that same request. Model time is the ONNX work:
vision encoder, text encoder and decoder steps. The server reports it in a ``Server-Timing`` header (entries
``vision``, ``encoder``, ``decode``; or one ``model``, ``engine`` or ``inference`` entry where it has no stages),
or, where it has no such header, in a per-stage seconds histogram of ``/metrics``, whose change over one request
(requests are sequential) is that request's model time. The ``preprocess`` and ``queue`` entries, when
reported, are given apart as parts of the overhead.

Peak server RSS is the server process's high-water mark (``VmHWM``), polled as well in case it is unavailable:
for the whole run, and for each level alone (the mark is reset before each level; bench/memory.py). Beside each
level's peak, the KV cache the decoder holds at the level's largest batch is counted from the model's config
(bench/kv_cache.py): the batch from ``/metrics`` (the upper bound of its histogram bucket, at most the level's
clients), rows = requests x the model's default beams, the encoder length from the requests' ``prompt_tokens``
(image and prompt tokens), the self-attention length from their ``completion_tokens``; the cross-attention cache is
counted once per request or once per row as the decoder graph declares.
A level the server does not survive (out of memory, crash) ends the load test; the levels before it are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench import workload
from bench.kv_cache import DecoderCache
from bench.memory import MemoryWatch, WindowPeak
from bench.prometheus import Histogram, histograms
from bench.server_process import ServerConfig, ServerProcess

# The ONNX work of a request, as the server names its stages ("decode" covers every step, the first included).
MODEL_STAGES = ("vision", "vision_encoder", "encoder", "text_encoder", "decode")
WHOLE_MODEL = ("model", "engine", "inference")  # one entry for all of it, where a server gives no stages
BATCH_HISTOGRAM = "florence_batch_size"


@dataclass(frozen=True)
class ServerPlan:
    model_dir: Path
    variant: str
    provider: str
    concurrency: tuple[int, ...]
    max_tokens: int
    requests_per_level: int
    seconds_per_level: float
    overhead_requests: int
    load_timeout_s: float
    request_timeout_s: float
    weight_bytes: int
    engine: tuple[tuple[str, str], ...] = ()  # further EngineSettings fields: the in-process contender's
    contender: str | None = None  # the in-process contender of the same configuration


@dataclass
class Sample:
    latency_s: float
    status: int
    completion_tokens: int = 0
    prompt_tokens: int = 0  # what the encoder saw: image tokens and prompt tokens
    timing: dict[str, float] = field(default_factory=dict)  # the Server-Timing entries, in seconds
    error: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: the value below which ``q`` percent of the samples fall (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


def server_timing(header: str | None) -> dict[str, float]:
    """The entries of a ``Server-Timing`` header, in seconds (the header gives milliseconds)."""
    entries: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        match = re.search(r"dur=([0-9.eE+-]+)", params)
        if match:
            entries[name.strip().lower()] = float(match.group(1)) / 1000
    return entries


def model_seconds(entries: dict[str, float]) -> float | None:
    """Model time from Server-Timing entries: its stages added up, else a whole-model entry."""
    stages = [entries[s] for s in MODEL_STAGES if s in entries]
    if stages:
        return sum(stages)
    return next((entries[name] for name in WHOLE_MODEL if name in entries), None)


def request_body(model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": max_tokens,
        "ignore_eos": True,  # vLLM's extension: generate max_tokens whatever the model says; ignored where unknown
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": workload.data_url()}},
                    {"type": "text", "text": workload.TASK},
                ],
            }
        ],
    }


async def _send(session: aiohttp.ClientSession, url: str, body: bytes) -> Sample:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            payload = await response.read()
            latency = time.perf_counter() - started
            timing = server_timing(response.headers.get("Server-Timing"))
            if response.status != 200:
                return Sample(latency, response.status, timing=timing, error=payload[:300].decode(errors="replace"))
            usage = json.loads(payload).get("usage") or {}
            tokens = int(usage.get("completion_tokens", 0))
            return Sample(latency, 200, tokens, int(usage.get("prompt_tokens", 0)), timing)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return Sample(time.perf_counter() - started, 0, error=f"{type(exc).__name__}: {exc}")


async def _metrics(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(f"{base}/metrics") as response:
        return await response.text()


def _batch_histogram(text: str) -> Histogram:
    return histograms(text).get(BATCH_HISTOGRAM, Histogram())


def _stage_seconds(text: str) -> float | None:
    """Model seconds so far, from a per-stage seconds histogram (a histogram with a ``stage`` label)."""
    total = 0.0
    found = False
    for name, hist in histograms(text, {"stage": "*"}).items():
        stage = name.rsplit("{stage=", 1)[-1].rstrip("}")
        if "second" in name and stage in MODEL_STAGES:
            total += hist.total
            found = True
    return total if found else None


@dataclass
class Level:
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    batch: Histogram = field(default_factory=Histogram)

    def to_dict(self) -> dict[str, Any]:
        ok = [s for s in self.samples if s.status == 200]
        latencies = [s.latency_s for s in ok]
        tokens = sum(s.completion_tokens for s in ok)
        errors = [s for s in self.samples if s.status != 200]
        return {
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "ok": len(ok),
            "errors": len(errors),
            "first_error": (f"{errors[0].status}: {errors[0].error}" if errors else None),
            "wall_s": self.wall_s,
            "throughput_rps": len(ok) / self.wall_s if self.wall_s else None,
            "throughput_tokens_per_s": tokens / self.wall_s if self.wall_s else None,
            "completion_tokens_mean": tokens / len(ok) if ok else None,
            "latency_s": {
                "p50": percentile(latencies, 50),
                "p95": percentile(latencies, 95),
                "p99": percentile(latencies, 99),
                "mean": statistics.fmean(latencies) if latencies else None,
            },
            "batch_sizes": self.batch.counts(),
            "batch_size_mean": self.batch.mean,
            "batch_size_max": largest_batch(self.batch, self.concurrency),
            "prompt_tokens_max": max((s.prompt_tokens for s in ok), default=0),
            "completion_tokens_max": max((s.completion_tokens for s in ok), default=0),
        }


def largest_batch(batch: Histogram, clients: int) -> int | None:
    """The largest batch of a level: the upper bound of the highest bucket with an observation, and at most the
    level's clients (each has one request in flight). None when no batch was observed."""
    bounds = [le for le, count in batch.counts().items() if count > 0]
    if not bounds:
        return None
    return min(clients, max(clients if le == "+Inf" else int(float(le)) for le in bounds))


async def run_level(session: aiohttp.ClientSession, base: str, model: str, plan: ServerPlan, clients: int) -> Level:
    url = f"{base}/v1/chat/completions"
    body = json.dumps(request_body(model, plan.max_tokens)).encode()
    budget = max(plan.requests_per_level, clients)
    level = Level(clients)
    before = _batch_histogram(await _metrics(session, base))
    started = time.perf_counter()
    deadline = started + plan.seconds_per_level

    async def client() -> None:
        nonlocal budget
        while budget > 0 and time.perf_counter() < deadline:
            budget -= 1
            level.samples.append(await _send(session, url, body))

    await asyncio.gather(*(client() for _ in range(clients)))
    level.wall_s = time.perf_counter() - started
    with contextlib.suppress(aiohttp.ClientError):  # the server died: its samples say so, and the caller stops
        level.batch = _batch_histogram(await _metrics(session, base)).minus(before)
    return level


async def measure_overhead(session: aiohttp.ClientSession, base: str, model: str, plan: ServerPlan) -> dict[str, Any]:
    url = f"{base}/v1/chat/completions"
    body = json.dumps(request_body(model, 1)).encode()
    overheads: list[float] = []
    latencies: list[float] = []
    parts: dict[str, list[float]] = {"preprocess": [], "queue": []}
    source = None
    for _ in range(plan.overhead_requests):
        before = _stage_seconds(await _metrics(session, base))
        sample = await _send(session, url, body)
        after = _stage_seconds(await _metrics(session, base))
        if sample.status != 200:
            return {"error": f"{sample.status}: {sample.error}"}
        latencies.append(sample.latency_s)
        model_s = model_seconds(sample.timing)
        if model_s is not None:
            source = "Server-Timing header"
        elif before is not None and after is not None:
            model_s, source = after - before, "/metrics stage seconds"
        if model_s is None:
            break  # the server does not say: more requests would not tell more
        overheads.append(sample.latency_s - model_s)
        for part, values in parts.items():
            if part in sample.timing:
                values.append(sample.timing[part])
    result: dict[str, Any] = {
        "requests": len(latencies),
        "max_tokens": 1,
        "latency_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "model_time_source": source,
    }
    if overheads:
        result |= {
            "p50_ms": 1000 * statistics.median(overheads),
            "p95_ms": 1000 * (percentile(overheads, 95) or 0.0),
            "samples_ms": [1000 * o for o in overheads],
            **{f"{part}_p50_ms": 1000 * statistics.median(v) for part, v in parts.items() if v},
        }
    else:
        result["note"] = (
            "not measured: the server reports no per-request model time (a Server-Timing header with its "
            "stages or a 'model' entry, or a per-stage seconds histogram in /metrics)"
        )
    return result


def level_rss(peak: WindowPeak, weight_bytes: int) -> dict[str, Any]:
    return {
        "peak_bytes": peak.bytes,
        "peak_over_weights": peak.bytes / weight_bytes if weight_bytes else None,
        "source": peak.source,
    }


def level_kv_cache(level: dict[str, Any], cache: DecoderCache) -> dict[str, Any]:
    """The KV cache at the level's largest batch, or nothing where the level saw no batch or no token counts."""
    requests = level["batch_size_max"]
    if not requests or not level["prompt_tokens_max"] or not level["completion_tokens_max"]:
        return {}
    return {"kv_cache": cache.at(requests, level["prompt_tokens_max"], level["completion_tokens_max"]).to_dict()}


class Served(Protocol):
    """What the load test needs of the server under test (bench/server_process.py; a stand-in in tests)."""

    base: str
    memory: MemoryWatch

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float) -> float: ...

    def exit_reason(self) -> str | None: ...


async def drive(
    server: Served, plan: ServerPlan, cache: DecoderCache | None, result: dict[str, Any], progress: Any
) -> None:
    """Fill ``result`` as the load test goes, so that what was measured survives a server that dies."""
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s + 30)
    connector = aiohttp.TCPConnector(limit=max(plan.concurrency) + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        result["ready_s"] = await server.wait_ready(session, plan.load_timeout_s)
        progress(f"server ready in {result['ready_s']:.1f} s")
        async with session.get(f"{server.base}/v1/models") as response:
            listed = [m["id"] for m in (await response.json()).get("data", [])]
        model = "microsoft/Florence-2-large" if "microsoft/Florence-2-large" in listed else listed[0]
        result["model"] = model
        result["overhead"] = await measure_overhead(session, server.base, model, plan)
        overhead = result["overhead"]
        progress(f"server overhead: {overhead.get('p50_ms', overhead.get('note', overhead.get('error')))}")
        for clients in plan.concurrency:
            server.memory.start_window()
            level = (await run_level(session, server.base, model, plan, clients)).to_dict()
            level["rss"] = level_rss(server.memory.window_peak(), plan.weight_bytes)
            if cache is not None:
                level |= level_kv_cache(level, cache)
            result["levels"].append(level)
            progress(
                f"{clients:>3} clients: {level['ok']} ok, {level['errors']} errors, "
                f"{level['throughput_tokens_per_s'] or 0:.1f} tok/s, p95 {level['latency_s']['p95'] or 0:.2f} s, "
                f"peak RSS {level['rss']['peak_bytes'] / 2**20:,.0f} MiB"
            )
            reason = server.exit_reason()
            if reason:
                raise RuntimeError(f"at {clients} clients: {reason}")


def _decoder_cache(plan: ServerPlan) -> tuple[DecoderCache | None, str | None]:
    try:
        return DecoderCache.from_model_dir(plan.model_dir, plan.variant), None
    except (OSError, KeyError, ValueError) as exc:
        return None, f"KV cache not counted: {type(exc).__name__}: {exc}"


def run(plan: ServerPlan, log_dir: Path, progress: Any = print) -> dict[str, Any]:
    functions_dir = log_dir / "no-functions"  # the benchmark drives the model API only
    functions_dir.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(
        model_dir=plan.model_dir,
        variant=plan.variant,
        provider=plan.provider,
        max_concurrent=max(plan.concurrency),
        max_new_tokens=max(plan.max_tokens, 1),
        request_timeout_s=plan.request_timeout_s,
        engine=plan.engine,
    )
    cache, cache_note = _decoder_cache(plan)  # read before the server starts: the decoder graph is parsed
    server = ServerProcess(config, log_dir / "server.log", functions_dir)
    result: dict[str, Any] = {
        "levels": [],
        "overhead": {},
        "max_tokens": plan.max_tokens,
        "variant": plan.variant,
        "engine": dict(plan.engine),
        "contender": plan.contender,
    }
    try:
        asyncio.run(drive(server, plan, cache, result, progress))
    except (RuntimeError, aiohttp.ClientError, OSError) as exc:  # the server died or never came up
        result["error"] = server.exit_reason() or f"{type(exc).__name__}: {exc}"
        progress(f"server load test stopped: {result['error']}")
    finally:
        peak = server.stop()
    serial = next((lv for lv in result["levels"] if lv["concurrency"] == 1), None)
    base = serial["throughput_tokens_per_s"] if serial else None
    result["scaling"] = {
        str(lv["concurrency"]): (
            lv["throughput_tokens_per_s"] / base if base and lv["throughput_tokens_per_s"] else None
        )
        for lv in result["levels"]
    }
    result["rss"] = {
        "peak_bytes": peak,
        "weight_bytes": plan.weight_bytes,
        "peak_over_weights": peak / plan.weight_bytes if plan.weight_bytes else None,
    }
    if cache_note:
        result["rss"]["kv_cache_note"] = cache_note
    return result
