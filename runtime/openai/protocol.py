"""Shapes of the OpenAI-compatible API: the request's model field, the model list, and SSE framing.

The chat.completion objects themselves come from runtime.binding.completion: the binding and HTTP answer with
the same object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from runtime.binding.registry import RegisteredModel
from runtime.errors import InvalidRequest, SchemaViolation

SSE_DONE = b"data: [DONE]\n\n"
OWNED_BY = "florence-edge"


def model_of(body: Any) -> str:
    """The ``model`` field of a chat completion request body."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object with model and messages")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SchemaViolation("model: expected a model id string (see GET /v1/models)", param="model")
    return model


def model_list(models: list[RegisteredModel], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": OWNED_BY,
                "root": model.engine.info.name,
                "random_weights": model.engine.info.random_weights,
            }
            for model in models
            for model_id in model.ids
        ],
    }


def sse_event(data: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
