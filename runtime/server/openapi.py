"""The OpenAPI 3.2 description of the HTTP surface, served at ``/openapi.json``.

Built from the sources of truth rather than written by hand: the paths are the documented routes of
runtime/route_table.py, the request body is the binding's request schema (runtime/spec) with the server's limits
filled in, the answers are the wire shapes of runtime/openai/protocol.py (whose ``result`` follows the task table),
and the error envelope lists the codes of runtime/errors.py per status. Edge functions (``/<name>``) answer
whatever their code returns, so they are not described.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.binding.registry import id_forms
from runtime.binding.validation import limited_request_schema
from runtime.config import Limits, Settings
from runtime.errors import RuntimeErrorBase
from runtime.openai.protocol import wire_schemas
from runtime.openai.typed_schema import COMPONENTS as SCHEMAS
from runtime.route_table import (
    COMPLETIONS,
    DOCUMENTED_ROUTES,
    HEALTHZ,
    METRICS,
    MODELS,
    OPENAPI,
    READYZ,
    RouteSpec,
    route,
)
from runtime.server.request_id import HEADER as REQUEST_ID_HEADER

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
            spec.path: {method.lower(): _operation(spec, limits, model_ids) for method in spec.methods}
            for spec in DOCUMENTED_ROUTES
        },
        "components": {"schemas": components},
    }


def openapi_route(settings: Settings) -> Route:
    body = json.dumps(openapi_document(settings), ensure_ascii=False, separators=(",", ":")).encode()

    async def openapi(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return route(OPENAPI, openapi)


# Operations: one per documented route of runtime/route_table.py (its operation id and summary come from there)


def _operation(spec: RouteSpec, limits: Limits, model_ids: list[str]) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": spec.operation_id, "summary": spec.summary}
    if spec == COMPLETIONS:
        return {**operation, **_completions_operation(limits, model_ids)}
    return {**operation, "responses": _RESPONSES[spec]()}


_RESPONSES: dict[RouteSpec, Callable[[], dict[str, Any]]] = {
    MODELS: lambda: {"200": _json_response("The models", "ModelList")},
    HEALTHZ: lambda: {"200": _json_response("Alive", "Health")},
    READYZ: lambda: {
        "200": _json_response("Ready", "Ready"),
        "503": _error_response(503, "Loading, failed to load, or shutting down"),
    },
    METRICS: lambda: {
        "200": {
            "description": "Prometheus text exposition format",
            "headers": _headers(),
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    OPENAPI: lambda: {
        "200": {
            "description": "The OpenAPI document",
            "headers": _headers(),
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
}


# Requests


def _request_schemas(limits: Limits, model_ids: list[str]) -> dict[str, Any]:
    """The binding's request schema with the server's bounds, as OpenAPI components: its definitions become
    schemas of their own."""
    schema = limited_request_schema(limits)
    definitions = schema.pop("definitions", {})
    schema.pop("$schema", None)
    names = {name: _component_name(name) for name in definitions}
    schemas = {names[name]: _rewrite_refs(body, names) for name, body in definitions.items()}
    request = _rewrite_refs(schema, names)
    request["required"] = ["model", *request["required"]]
    properties = request["properties"]
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
    """The wire shapes (runtime.openai.protocol), the event stream that carries chunks, and the health answers."""
    return {
        **wire_schemas(),
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
