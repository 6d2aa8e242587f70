"""The wire format, written once: the chat.completion, chat.completion.chunk and model-list shapes as TypedDicts,
the builders that make them (``AI.run`` and HTTP answer with the same objects), their JSON Schema (derived from
the same TypedDicts, assembled into ``/openapi.json`` by runtime.server.openapi) and SSE framing.

Beyond the OpenAI fields, a completion carries ``result``: the parsed answer ``{"<TAG>": result}`` (a string for
text tasks; bboxes, labels, polygons ... in pixels of the original image for structured ones), so callers need not
parse ``choices[0].message.content``, which holds the text (text tasks) or the JSON of ``result`` (structured).

This module is a leaf: it imports the engine's result types and the task table, never the binding or the server,
so both import it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from runtime.engine.api import ModelInfo, TaskResult
from runtime.errors import InvalidRequest, SchemaViolation
from runtime.florence2 import TASKS, ParseType
from runtime.openai.typed_schema import COMPONENTS, Component, Keywords, component_schemas, schema_of

SSE_DONE = b"data: [DONE]\n\n"
OWNED_BY = "florence-edge"

# Shapes

FinishReason = Literal["stop", "length"]
CompletionId = Annotated[str, Keywords(pattern="^chatcmpl-")]
Count = Annotated[int, Keywords(minimum=0)]


class Usage(TypedDict):
    prompt_tokens: Count
    completion_tokens: Count
    total_tokens: Count


class Message(TypedDict):
    role: Literal["assistant"]
    content: Annotated[str, Keywords(description="the text of a text task; the JSON of result otherwise")]


class Choice(TypedDict):
    index: Literal[0]
    message: Message
    logprobs: None
    finish_reason: FinishReason


class ChatCompletion(TypedDict):
    id: CompletionId
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: Annotated[list[Choice], Keywords(minItems=1, maxItems=1)]
    usage: Usage
    result: Annotated[dict[str, Any], Component("TaskResult")]


class Delta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str


class ChunkChoice(TypedDict):
    index: Literal[0]
    delta: Delta
    logprobs: None
    finish_reason: FinishReason | None


class ChatCompletionChunk(TypedDict):
    id: CompletionId
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: Annotated[list[ChunkChoice], Keywords(maxItems=1)]
    usage: NotRequired[Usage]


Box = Annotated[list[float], Keywords(minItems=4, maxItems=4)]
Quad = Annotated[list[float], Keywords(minItems=8, maxItems=8)]
# Per instance, its polygons; each polygon a flat list x1, y1, x2, y2 ...
InstancePolygons = list[list[list[float]]]


class Boxes(TypedDict):
    bboxes: list[Box]
    labels: list[str]


class QuadBoxes(TypedDict):
    quad_boxes: list[Quad]
    labels: list[str]


class Polygons(TypedDict):
    polygons: InstancePolygons
    labels: list[str]


class BoxesOrPolygons(TypedDict):
    bboxes: list[Box]
    bboxes_labels: list[str]
    polygons: InstancePolygons
    polygons_labels: list[str]


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: Annotated[str, Keywords(description="the model folder's name")]
    random_weights: Annotated[bool, Keywords(description="true: the answers are noise")]


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]


# The answer shape of each structured parse type; pure text answers are strings.
ANSWER_SHAPES: Mapping[ParseType, type] = {
    ParseType.OCR: QuadBoxes,
    ParseType.PHRASE_GROUNDING: Boxes,
    ParseType.DESCRIPTION_WITH_BBOXES: Boxes,
    ParseType.BBOXES: Boxes,
    ParseType.DESCRIPTION_WITH_POLYGONS: Polygons,
    ParseType.POLYGONS: Polygons,
    ParseType.DESCRIPTION_WITH_BBOXES_OR_POLYGONS: BoxesOrPolygons,
}
# Shapes that are components of their own (referred to by name); the others are written inline where used.
NAMED_SHAPES: tuple[type, ...] = (
    ChatCompletion,
    ChatCompletionChunk,
    Usage,
    Boxes,
    QuadBoxes,
    Polygons,
    BoxesOrPolygons,
    ModelList,
    Model,
)


# Schema


def wire_schemas() -> dict[str, Any]:
    """The JSON Schema of every named shape, and ``TaskResult`` (``{"<TAG>": answer}`` from the task table)."""
    return {**component_schemas(NAMED_SHAPES), "TaskResult": _task_result_schema()}


def wire_schema(name: str) -> dict[str, Any]:
    """A standalone JSON Schema (2020-12) of one named shape, its components included: what a client validates
    an answer with."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": COMPONENTS + name,
        "components": {"schemas": wire_schemas()},
    }


def _task_result_schema() -> dict[str, Any]:
    def answer(parse_type: ParseType) -> dict[str, Any]:
        return schema_of(str if parse_type is ParseType.PURE_TEXT else ANSWER_SHAPES[parse_type], NAMED_SHAPES)

    return {
        "description": '{"<TAG>": answer}: text for text tasks, coordinates in pixels of the original image',
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {tag: answer(task.parse_type) for tag, task in TASKS.items()},
        "additionalProperties": False,
    }


# Builders


@dataclass(frozen=True)
class CompletionHeader:
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> CompletionHeader:
        return cls(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model)


def content_of(result: TaskResult, is_text: bool) -> str:
    if is_text:
        answer = result.parsed.get(result.task)
        return answer if isinstance(answer, str) else result.text
    return json.dumps(result.parsed, ensure_ascii=False, separators=(",", ":"))


def usage_of(result: TaskResult) -> Usage:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def completion(header: CompletionHeader, result: TaskResult, is_text: bool) -> ChatCompletion:
    return {
        "id": header.id,
        "object": "chat.completion",
        "created": header.created,
        "model": header.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content_of(result, is_text)},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage_of(result),
        "result": result.parsed,
    }


def chunk(
    header: CompletionHeader,
    delta: Delta | None,
    finish_reason: FinishReason | None = None,
    usage: Usage | None = None,
) -> ChatCompletionChunk:
    """One streamed chunk; ``delta=None`` makes the usage-only chunk that ends a stream with include_usage."""
    body: ChatCompletionChunk = {
        "id": header.id,
        "object": "chat.completion.chunk",
        "created": header.created,
        "model": header.model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def model_list(models: Iterable[tuple[str, ModelInfo]], created: int) -> ModelList:
    """Every ``(id, model)``: a model is listed once per id it answers to."""
    return {
        "object": "list",
        "data": [
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": OWNED_BY,
                "root": info.name,
                "random_weights": info.random_weights,
            }
            for model_id, info in models
        ],
    }


# Requests and framing


def model_of(body: Any) -> str:
    """The ``model`` field of a chat completion request body."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object with model and messages")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SchemaViolation("model: expected a model id string (see GET /v1/models)", param="model")
    return model


def sse_event(data: Mapping[str, object]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
