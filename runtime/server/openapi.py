"""The OpenAPI 3.2 description of the HTTP surface, served at ``/openapi.json``.

Built from the sources of truth rather than written by hand: the request body is the binding's request schema
(runtime/spec) with the server's limits filled in, the error envelope lists the codes of runtime/errors.py per
status, and the ``result`` field follows the task table. Edge functions (``/<name>``) answer whatever their code
returns, so they are not described.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.binding.registry import id_forms
from runtime.config import Limits, Settings
from runtime.errors import RuntimeErrorBase
from runtime.florence2 import TASKS, ParseType
from runtime.openai.router import COMPLETIONS_PATH, MODELS_PATH
from runtime.server.http_metrics import ROUTE_KEY
from runtime.server.request_id import HEADER as REQUEST_ID_HEADER
from runtime.spec import request_schema

OPENAPI_PATH = "/openapi.json"
SCHEMAS = "#/components/schemas/"

# Which statuses each operation can answer with (besides 200); the error codes per status come from errors.py.
COMPLETION_ERRORS = (400, 404, 408, 413, 415, 429, 500, 503, 504)
RETRY_AFTER_STATUSES = frozenset({429, 503})


def error_classes() -> list[type[RuntimeErrorBase]]:
    """RuntimeErrorBase and every subclass, depth first."""

    def walk(cls: type[RuntimeErrorBase]) -> Iterator[type[RuntimeErrorBase]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from walk(sub)

    return list(dict.fromkeys(walk(RuntimeErrorBase)))


def error_codes_by_status() -> dict[int, list[str]]:
    codes: dict[int, list[str]] = {}
    for cls in error_classes():
        codes.setdefault(cls.status, [])
        if cls.code not in codes[cls.status]:
            codes[cls.status].append(cls.code)
    return dict(sorted(codes.items()))


def openapi_document(settings: Settings) -> dict[str, Any]:
    limits = settings.limits
    model_ids = list(
        dict.fromkeys(form for spec in settings.models for model_id in spec.ids for form in id_forms(model_id))
    )
    components: dict[str, Any] = {
        **_request_schemas(limits, model_ids),
        **_answer_schemas(),
        **_error_schemas(),
    }
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "florence-edge",
            "version": "0.1.0",
            "description": (
                "Florence-2 behind an OpenAI-compatible chat completions endpoint. Every error leaves in one "
                'envelope, {"error": {message, type, code, param}}; every response carries X-Request-Id. Edge '
                "functions are served at /<name> and answer what their code returns; they are not described here."
            ),
        },
        "paths": {
            COMPLETIONS_PATH: {"post": _completions_operation(limits, model_ids)},
            MODELS_PATH: {
                "get": {
                    "operationId": "listModels",
                    "summary": "The loaded models, under every id they answer to",
                    "responses": {"200": _json_response("The models", "ModelList")},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: the process serves HTTP",
                    "responses": {"200": _json_response("Alive", "Health")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: every model is loaded and warm, and the server is not draining",
                    "responses": {
                        "200": _json_response("Ready", "Ready"),
                        "503": _error_response(503, "Loading, failed to load, or shutting down"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "headers": _headers(),
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document",
                            "headers": _headers(),
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": components},
    }


def openapi_route(settings: Settings) -> Route:
    body = json.dumps(openapi_document(settings), ensure_ascii=False, separators=(",", ":")).encode()

    async def openapi(request: Request) -> Response:
        request.scope[ROUTE_KEY] = OPENAPI_PATH
        return Response(body, media_type="application/json")

    return Route(OPENAPI_PATH, openapi, methods=["GET"])


# Requests


def _request_schemas(limits: Limits, model_ids: list[str]) -> dict[str, Any]:
    """The binding's request schema, as OpenAPI components: its definitions become schemas of their own."""
    schema = request_schema()
    definitions = schema.pop("definitions", {})
    schema.pop("$schema", None)
    names = {name: _component_name(name) for name in definitions}
    schemas = {names[name]: _rewrite_refs(body, names) for name, body in definitions.items()}
    request = _rewrite_refs(schema, names)
    request["required"] = ["model", *request["required"]]
    properties = request["properties"]
    for name in ("max_tokens", "max_completion_tokens"):
        properties[name]["maximum"] = limits.max_new_tokens
        properties[name]["description"] = "at most FLORENCE_MAX_NEW_TOKENS"
    properties["num_beams"]["maximum"] = limits.max_num_beams
    properties["num_beams"]["description"] = "at most FLORENCE_MAX_NUM_BEAMS"
    properties["model"]["enum"] = model_ids
    properties["model"]["description"] = "a model id from GET /v1/models (404 for any other)"
    request["description"] = (
        "One user message with one image_url part and one text part (a Florence-2 task tag, and its input for "
        "tags that take one). Other fields of OpenAI's request are accepted and ignored."
    )
    schemas["ChatCompletionRequest"] = request
    return schemas


def _component_name(definition: str) -> str:
    return "".join(word.capitalize() for word in definition.split("_"))


def _rewrite_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: SCHEMAS + names[value.removeprefix("#/definitions/")]
            if key == "$ref" and isinstance(value, str) and value.startswith("#/definitions/")
            else _rewrite_refs(value, names)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, names) for item in node]
    return node


def _completions_operation(limits: Limits, model_ids: list[str]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": (
                "A chat.completion object; with stream: true, server-sent events whose data are "
                "ChatCompletionChunk objects (an error after the first event arrives as an Error object), "
                "ending with data: [DONE]"
            ),
            "headers": _headers(),
            "content": {
                "application/json": {"schema": _ref("ChatCompletion")},
                "text/event-stream": {"itemSchema": _ref("StreamEvent")},
            },
        },
    }
    for status in COMPLETION_ERRORS:
        responses[str(status)] = _error_response(status, _ERROR_MEANINGS[status])
    return {
        "operationId": "createChatCompletion",
        "summary": "Run one Florence-2 task on one image",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": _ref("ChatCompletionRequest"),
                    "example": _example_request(limits, model_ids[0]),
                }
            },
        },
        "responses": responses,
    }


def _example_request(limits: Limits, model_id: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 40)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {
        "model": model_id,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "<CAPTION>"}],
            }
        ],
        "max_tokens": min(8, limits.max_new_tokens),
    }


# Answers


def _answer_schemas() -> dict[str, Any]:
    number_list = {"type": "array", "items": {"type": "number"}}
    labels = {"type": "array", "items": {"type": "string"}}
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    }
    finish_reason = {"enum": ["stop", "length"]}
    return {
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage", "result"],
            "properties": {
                "id": {"type": "string", "pattern": "^chatcmpl-"},
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "message", "logprobs", "finish_reason"],
                        "properties": {
                            "index": {"const": 0},
                            "message": {
                                "type": "object",
                                "required": ["role", "content"],
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": {
                                        "type": "string",
                                        "description": "the text of a text task; the JSON of result otherwise",
                                    },
                                },
                            },
                            "logprobs": {"type": "null"},
                            "finish_reason": finish_reason,
                        },
                    },
                },
                "usage": _ref("Usage"),
                "result": _ref("TaskResult"),
            },
        },
        "ChatCompletionChunk": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": {"type": "string", "pattern": "^chatcmpl-"},
                "object": {"const": "chat.completion.chunk"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "delta", "logprobs", "finish_reason"],
                        "properties": {
                            "index": {"const": 0},
                            "delta": {
                                "type": "object",
                                "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                                "additionalProperties": False,
                            },
                            "logprobs": {"type": "null"},
                            "finish_reason": {"anyOf": [finish_reason, {"type": "null"}]},
                        },
                    },
                },
                "usage": _ref("Usage"),
            },
        },
        "StreamEvent": {
            "description": "One server-sent event of a streamed completion",
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "anyOf": [
                        {"const": "[DONE]"},
                        {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"anyOf": [_ref("ChatCompletionChunk"), _ref("Error")]},
                        },
                    ]
                }
            },
        },
        "Usage": usage,
        "TaskResult": {
            "description": '{"<TAG>": answer}: text for text tasks, coordinates in pixels of the original image',
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {tag: _result_schema(task.parse_type) for tag, task in TASKS.items()},
            "additionalProperties": False,
        },
        "Boxes": {
            "type": "object",
            "required": ["bboxes", "labels"],
            "properties": {"bboxes": _coordinates(number_list, 4), "labels": labels},
            "additionalProperties": False,
        },
        "QuadBoxes": {
            "type": "object",
            "required": ["quad_boxes", "labels"],
            "properties": {"quad_boxes": _coordinates(number_list, 8), "labels": labels},
            "additionalProperties": False,
        },
        "Polygons": {
            "type": "object",
            "required": ["polygons", "labels"],
            "properties": {"polygons": _polygons(), "labels": labels},
            "additionalProperties": False,
        },
        "BoxesOrPolygons": {
            "type": "object",
            "required": ["bboxes", "bboxes_labels", "polygons", "polygons_labels"],
            "properties": {
                "bboxes": _coordinates(number_list, 4),
                "bboxes_labels": labels,
                "polygons": _polygons(),
                "polygons_labels": labels,
            },
            "additionalProperties": False,
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
        },
        "Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by", "root", "random_weights"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
                "root": {"type": "string", "description": "the model folder's name"},
                "random_weights": {"type": "boolean", "description": "true: the answers are noise"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Ready": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ready"}},
        },
    }


_RESULT_SCHEMAS: dict[ParseType, str] = {
    ParseType.OCR: "QuadBoxes",
    ParseType.PHRASE_GROUNDING: "Boxes",
    ParseType.DESCRIPTION_WITH_BBOXES: "Boxes",
    ParseType.BBOXES: "Boxes",
    ParseType.DESCRIPTION_WITH_POLYGONS: "Polygons",
    ParseType.POLYGONS: "Polygons",
    ParseType.DESCRIPTION_WITH_BBOXES_OR_POLYGONS: "BoxesOrPolygons",
}


def _result_schema(parse_type: ParseType) -> dict[str, Any]:
    if parse_type is ParseType.PURE_TEXT:
        return {"type": "string"}
    return _ref(_RESULT_SCHEMAS[parse_type])


def _coordinates(number_list: dict[str, Any], count: int) -> dict[str, Any]:
    return {"type": "array", "items": {**number_list, "minItems": count, "maxItems": count}}


def _polygons() -> dict[str, Any]:
    """Per instance, its polygons; each polygon a flat list x1, y1, x2, y2 ..."""
    return {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}


# Errors

_ERROR_MEANINGS: dict[int, str] = {
    400: "The request is invalid: its JSON, the payload schema, the task input, or the image",
    404: "Unknown model",
    408: "The request ran past FLORENCE_INVOCATION_TIMEOUT_S, or its body took over FLORENCE_BODY_TIMEOUT_S",
    413: "The body, the image bytes or the image pixels are over a limit",
    415: "The body is not JSON, or the image is in a format that is not accepted",
    429: "At capacity: every slot is busy and the queue is full; retry after Retry-After",
    500: "A bug, or the model failed during this request's batch; the request id is in X-Request-Id",
    503: "Not ready (loading) or shutting down; retry after Retry-After",
    504: "The image server did not answer in time",
}


def _error_schemas() -> dict[str, Any]:
    classes = error_classes()
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "code", "param"],
                    "properties": {
                        "message": {"type": "string", "minLength": 1},
                        "type": {"enum": sorted({cls.type for cls in classes})},
                        "code": {"enum": sorted({cls.code for cls in classes})},
                        "param": {"type": ["string", "null"]},
                    },
                    "additionalProperties": False,
                }
            },
            "additionalProperties": False,
        }
    }
    for status, codes in error_codes_by_status().items():
        schemas[f"Error{status}"] = {
            "allOf": [
                _ref("Error"),
                {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
            ]
        }
    return schemas


def _error_response(status: int, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(retry_after=status in RETRY_AFTER_STATUSES),
        "content": {"application/json": {"schema": _ref(f"Error{status}")}},
    }


# Shared pieces


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _headers(),
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _headers(*, retry_after: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {
        REQUEST_ID_HEADER: {
            "description": "the request id: the caller's when well-formed, else made up; it is in the server log",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        }
    }
    if retry_after:
        headers["Retry-After"] = {
            "description": "seconds to wait before retrying (FLORENCE_RETRY_AFTER_S)",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    return headers


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMAS + name}
