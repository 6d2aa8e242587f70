"""Chat completions over HTTP: the binding's answer, within the invocation time limit, as JSON or SSE."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from runtime.config import Limits
from runtime.engine.api import ModelInfo, TaskResult
from runtime.errors import RequestTimeout, RuntimeErrorBase
from runtime.openai.protocol import (
    SSE_DONE,
    ChatCompletion,
    ChatCompletionChunk,
    ModelList,
    model_list,
    model_of,
    sse_event,
)

log = logging.getLogger(__name__)

TIMEOUT_SETTING = "FLORENCE_INVOCATION_TIMEOUT_S"


class Binding(Protocol):
    """What serving needs of the AI binding (runtime.binding.AIBinding), so this package does not import it."""

    async def run(
        self, model: str, payload: Mapping[str, Any], *, observe: Callable[[TaskResult], None] | None = None
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]: ...

    def model_infos(self) -> list[tuple[str, ModelInfo]]: ...


class OpenAIServing:
    def __init__(
        self,
        binding: Binding,
        limits: Limits,
        on_stream_error: Callable[[RuntimeErrorBase], None] | None = None,
    ) -> None:
        self._binding = binding
        self._limits = limits
        self._created = int(time.time())
        self._on_stream_error = on_stream_error or (lambda error: None)

    def list_models(self) -> ModelList:
        return model_list(self._binding.model_infos(), self._created)

    async def create_chat_completion(self, body: Any) -> tuple[ChatCompletion | AsyncIterator[bytes], dict[str, float]]:
        """A chat.completion dict, or the SSE byte stream of a ``stream: true`` request; with the engine's
        per-stage seconds of a non-streamed answer (for the Server-Timing header)."""
        model = model_of(body)
        deadline = asyncio.get_running_loop().time() + self._limits.invocation_timeout_s
        timings: dict[str, float] = {}
        try:
            async with asyncio.timeout_at(deadline):
                answer = await self._binding.run(model, body, observe=lambda result: timings.update(result.timings))
        except TimeoutError:
            raise self._timeout() from None
        if isinstance(answer, dict):
            return answer, timings
        return self._sse(answer, deadline), timings

    async def _sse(self, chunks: AsyncIterator[ChatCompletionChunk], deadline: float) -> AsyncIterator[bytes]:
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in chunks:
                    yield sse_event(chunk)
            yield SSE_DONE
        except Exception as exc:  # the status is sent: the error goes in the stream, as OpenAI's does
            error = self._timeout() if isinstance(exc, TimeoutError) else _runtime_error(exc)
            self._on_stream_error(error)
            yield sse_event(error.to_dict())
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def _timeout(self) -> RequestTimeout:
        return RequestTimeout(
            f"the completion ran past its time limit of {self._limits.invocation_timeout_s:g} s ({TIMEOUT_SETTING}); "
            "lower max_tokens or num_beams"
        )


def _runtime_error(exc: Exception) -> RuntimeErrorBase:
    if isinstance(exc, RuntimeErrorBase):
        return exc
    log.exception("error while streaming a completion (a bug)")
    return RuntimeErrorBase("internal error while streaming; the server log has the details")


# Engine stages reported in Server-Timing; "decode" already includes the first step.
_STAGES = ("queue", "preprocess", "vision", "encoder", "decode")


def server_timing(timings: dict[str, float]) -> str:
    """``Server-Timing`` value (milliseconds): each engine stage, and ``model`` for their sum without the queue.

    A client subtracts ``model`` and ``queue`` from its latency to get the server's own overhead (HTTP, validation,
    image fetch and decode). Stages of a batched request are the batch's: they are shared by its requests.
    """
    present = [(stage, timings[stage]) for stage in _STAGES if stage in timings]
    model = sum(seconds for stage, seconds in present if stage != "queue")
    return ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in [*present, ("model", model)])
