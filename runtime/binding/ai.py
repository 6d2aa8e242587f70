"""The ``AI`` binding: ``await AI.run(model, payload)`` -> a chat.completion object (or a stream of chunks).

One binding serves edge functions (the injected global ``AI``, also ``env.AI``) and the HTTP API alike:
validate the payload, resolve the model, load the image, run the engine, shape the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from runtime.binding.registry import ModelRegistry, RegisteredModel
from runtime.binding.request import CompletionRequest, read_request
from runtime.binding.validation import PayloadValidator, limited_request_schema
from runtime.config import Limits
from runtime.engine.api import ModelInfo, TaskRequest, TaskResult
from runtime.errors import InferenceFailed, InvalidRequest, StreamNotSupported
from runtime.openai.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    CompletionHeader,
    chunk,
    completion,
    usage_of,
)

log = logging.getLogger(__name__)

ResultObserver = Callable[[RegisteredModel, TaskResult], None]


class ImageSource(Protocol):
    async def load(self, url: str, *, param: str | None = None) -> Image.Image: ...

    async def size_of(self, data: bytes) -> tuple[int, int]: ...


@dataclass(frozen=True)
class PreparedRun:
    model_id: str
    model: RegisteredModel
    request: CompletionRequest
    task_request: TaskRequest
    is_text: bool


class AIBinding:
    def __init__(
        self,
        registry: ModelRegistry,
        images: ImageSource,
        limits: Limits,
        validator: PayloadValidator | None = None,
        on_result: ResultObserver | None = None,
    ) -> None:
        self._registry = registry
        self._images = images
        self._validator = validator or PayloadValidator(limited_request_schema(limits))
        self._on_result = on_result or (lambda model, result: None)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that serves requests; ``run_sync`` hands work to it from a sync function's thread."""
        self._loop = loop

    @property
    def models(self) -> ModelRegistry:
        return self._registry

    def model_infos(self) -> list[tuple[str, ModelInfo]]:
        """Every id a loaded model answers to, with that model."""
        return [(model_id, model.engine.info) for model in self._registry.models() for model_id in model.ids]

    async def run(
        self, model: str, payload: Mapping[str, Any], *, observe: Callable[[TaskResult], None] | None = None
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """A chat.completion dict; with ``"stream": true``, an async iterator of chat.completion.chunk dicts.

        Every check (payload, model, image, task input, first engine step) is done before this returns, so a
        stream that starts has only the generation itself left to fail.
        """
        prepared = await self.prepare(model, payload)
        if prepared.request.stream:
            return await self._open_stream(prepared)
        return await self._complete(prepared, observe)

    async def image_size(self, data: bytes) -> tuple[int, int]:
        """Width and height (as shown) of image bytes a function received, checked as ``run`` checks an image:
        the same byte and pixel limits (413), formats (415) and decoding errors (400)."""
        return await self._images.size_of(data)

    def run_sync(self, model: str, payload: Mapping[str, Any]) -> ChatCompletion:
        """``run`` for sync functions, which run in worker threads (no streaming: iterate ``run`` for that)."""
        if self._loop is None:
            raise RuntimeError("AI.run_sync needs the server's event loop; it is bound when the server starts")
        if _on_loop_thread(self._loop):
            raise RuntimeError("AI.run_sync blocks; from an async function use `await AI.run(...)`")
        if isinstance(payload, Mapping) and payload.get("stream"):
            raise StreamNotSupported("AI.run_sync does not stream; use `await AI.run(...)`", param="stream")
        answer = asyncio.run_coroutine_threadsafe(self.run(model, payload), self._loop).result()
        assert isinstance(answer, dict)
        return answer

    async def prepare(self, model_id: str, payload: Mapping[str, Any]) -> PreparedRun:
        if not isinstance(model_id, str):
            raise InvalidRequest(f"the model must be a string id, got {type(model_id).__name__}", param="model")
        model = self._registry.get(model_id)
        # Off the event loop: a large payload (up to the body limit) takes a while to check.
        await asyncio.to_thread(self._validator.validate, payload)
        request = read_request(payload)
        task = request.query.task
        is_text = model.engine.is_text_task(task)
        if request.stream and not is_text:
            raise StreamNotSupported(
                f"{task} answers with structured data, which is not streamed; send stream: false", param="stream"
            )
        # The engine's own check, once: a bad prompt is refused before the image is fetched (no network work for a
        # request that cannot run), and the prompt it tokenised travels with the request.
        prompt_ids = model.engine.check(request.query)
        image = await self._images.load(request.image_url, param=request.image_param)
        return PreparedRun(model_id, model, request, TaskRequest.of(request.query, image, prompt_ids), is_text)

    async def _complete(
        self, prepared: PreparedRun, observe: Callable[[TaskResult], None] | None = None
    ) -> ChatCompletion:
        result = await prepared.model.engine.run(prepared.task_request)
        self._on_result(prepared.model, result)
        if observe is not None:
            observe(result)
        return completion(CompletionHeader.new(prepared.model_id), result, prepared.is_text)

    async def _open_stream(self, prepared: PreparedRun) -> AsyncIterator[ChatCompletionChunk]:
        source = prepared.model.engine.stream(prepared.task_request)
        iterator = aiter(source)
        try:
            first: str | TaskResult | None = await anext(iterator)  # queue full, engine errors: before any byte
        except StopAsyncIteration:
            first = None
        except BaseException:
            await _close(iterator)
            raise
        return self._chunks(prepared, iterator, first)

    async def _chunks(
        self, prepared: PreparedRun, iterator: AsyncIterator[str | TaskResult], first: str | TaskResult | None
    ) -> AsyncIterator[ChatCompletionChunk]:
        header = CompletionHeader.new(prepared.model_id)
        try:
            yield chunk(header, {"role": "assistant", "content": ""})
            item = first
            while item is not None:
                if isinstance(item, TaskResult):
                    self._on_result(prepared.model, item)
                    yield chunk(header, {}, finish_reason=item.finish_reason)
                    if prepared.request.include_usage:
                        yield chunk(header, None, usage=usage_of(item))
                    return
                if item:
                    yield chunk(header, {"content": item})
                item = await anext(iterator, None)
            raise InferenceFailed("the engine's stream ended without a final result")
        finally:
            await _close(iterator)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
