"""Prometheus metrics of one server (its own registry: several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from runtime.binding.registry import RegisteredModel
from runtime.engine.api import TaskResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "florence_http_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "florence_http_request_duration_seconds",
            "HTTP request latency, until the last byte (streams included)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("florence_requests_in_flight", "Requests holding a concurrency slot", registry=r)
        self.queue_depth = Gauge("florence_requests_queued", "Requests waiting for a concurrency slot", registry=r)
        self.receiving = Gauge(
            "florence_requests_receiving", "Requests whose body is still arriving (they hold no slot yet)", registry=r
        )
        self.errors = Counter("florence_errors", "Error responses by error code", ["code"], registry=r)
        self.loop_lag = Histogram(
            "florence_event_loop_lag_seconds",
            "How late the event loop woke up for a timer; long stalls mean blocking work on the loop",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open fds, CPU seconds
        self.cancelled = Counter(
            "florence_requests_cancelled", "Requests cancelled because their client disconnected", registry=r
        )
        self.completion_tokens = Counter(
            "florence_tokens_generated", "Tokens generated (completion tokens)", ["model"], registry=r
        )
        self.prompt_tokens = Counter("florence_prompt_tokens", "Prompt tokens the encoder saw", ["model"], registry=r)
        self.batch_size = Histogram(
            "florence_batch_size", "Requests that shared a decoder batch", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.completions = Counter(
            "florence_completions",
            "Completed generations by task and finish reason",
            ["model", "task", "finish_reason"],
            registry=r,
        )
        self.ready = Gauge("florence_ready", "1 when every model is loaded and warmed, 0 otherwise", registry=r)
        self.random_weights = Gauge(
            "florence_model_random_weights",
            "1 for a model whose weights are random (outputs mean nothing)",
            ["model"],
            registry=r,
        )

    def observe_result(self, model: RegisteredModel, result: TaskResult) -> None:
        name = model.engine.info.name
        self.completion_tokens.labels(name).inc(result.completion_tokens)
        self.prompt_tokens.labels(name).inc(result.prompt_tokens)
        self.batch_size.labels(name).observe(result.batch_size)
        self.completions.labels(name, result.task, result.finish_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
