"""Serving: JSON or SSE, the time limit, and errors that happen after a stream has started."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import FakeEngine, payload

from runtime.binding import AIBinding, ModelRegistry
from runtime.config import Limits, MediaSettings
from runtime.engine.api import TaskRequest, TaskResult
from runtime.errors import InferenceFailed, RequestTimeout, SchemaViolation
from runtime.media import ImageLoader
from runtime.openai import OpenAIServing
from runtime.openai.protocol import SSE_DONE
from runtime.openai.serving import server_timing

MODEL = "microsoft/Florence-2-large"


class StallingEngine(FakeEngine):
    """Streams two words, then stalls (or fails)."""

    def __init__(self, failure: Exception | None = None) -> None:
        super().__init__()
        self.failure = failure

    async def stream(self, request: TaskRequest) -> AsyncIterator[str | TaskResult]:
        yield "one"
        yield " two"
        if self.failure is not None:
            raise self.failure
        await asyncio.sleep(3600)


def _serving(engine: FakeEngine, timeout_s: float = 5.0) -> tuple[OpenAIServing, list[str]]:
    registry = ModelRegistry()
    registry.add(["microsoft-florence-2-large"], engine)
    binding = AIBinding(registry, ImageLoader(MediaSettings()), Limits())
    errors: list[str] = []
    return OpenAIServing(
        binding, Limits(invocation_timeout_s=timeout_s), on_stream_error=lambda e: errors.append(e.code)
    ), errors


async def _events(stream: Any) -> list[Any]:
    events = []
    async for raw in stream:
        assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
        events.append("[DONE]" if raw == SSE_DONE else json.loads(raw[6:]))
    return events


async def test_json_answer() -> None:
    serving, _ = _serving(FakeEngine())
    answer, timings = await serving.create_chat_completion({"model": MODEL, **payload()})
    assert isinstance(answer, dict) and answer["object"] == "chat.completion"
    assert timings == FakeEngine.TIMINGS


async def test_model_field_is_required() -> None:
    serving, _ = _serving(FakeEngine())
    with pytest.raises(SchemaViolation) as caught:
        await serving.create_chat_completion(payload())
    assert caught.value.param == "model"


async def test_ignore_eos_reaches_the_engine_and_a_string_is_refused() -> None:
    engine = FakeEngine()
    serving, _ = _serving(engine)
    await serving.create_chat_completion({"model": MODEL, **payload(max_tokens=4, ignore_eos=True)})
    assert engine.requests[0].ignore_eos is True and engine.requests[0].max_new_tokens == 4
    with pytest.raises(SchemaViolation) as caught:
        await serving.create_chat_completion({"model": MODEL, **payload(ignore_eos="true")})
    assert caught.value.param == "ignore_eos" and "expected true or false" in caught.value.message
    assert len(engine.requests) == 1


async def test_stream_ends_with_done() -> None:
    serving, _ = _serving(FakeEngine())
    events = await _events((await serving.create_chat_completion({"model": MODEL, **payload(stream=True)}))[0])
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_error_after_the_stream_started_is_an_error_event() -> None:
    serving, errors = _serving(StallingEngine(InferenceFailed("session raised mid-way")))
    events = await _events((await serving.create_chat_completion({"model": MODEL, **payload(stream=True)}))[0])
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == ["one", " two"]
    assert events[-1] == {
        "error": {"message": "session raised mid-way", "type": "server_error", "code": "inference_error", "param": None}
    }
    assert errors == ["inference_error"]


async def test_time_limit_applies_to_the_whole_stream() -> None:
    serving, errors = _serving(StallingEngine(), timeout_s=0.3)
    events = await _events((await serving.create_chat_completion({"model": MODEL, **payload(stream=True)}))[0])
    assert events[-1]["error"]["code"] == "timeout" and errors == ["timeout"]


async def test_time_limit_of_a_plain_completion() -> None:
    engine = FakeEngine()
    engine.delay_s = 5
    serving, _ = _serving(engine, timeout_s=0.2)
    with pytest.raises(RequestTimeout, match="FLORENCE_INVOCATION_TIMEOUT_S"):
        await serving.create_chat_completion({"model": MODEL, **payload()})


def test_server_timing_reports_each_stage_and_the_model_sum() -> None:
    timings = {"queue": 0.002, "preprocess": 0.010, "vision": 0.100, "encoder": 0.020, "decode": 0.3005, "x": 9.0}
    assert server_timing(timings) == (
        "queue;dur=2.0, preprocess;dur=10.0, vision;dur=100.0, encoder;dur=20.0, decode;dur=300.5, model;dur=430.5"
    )
