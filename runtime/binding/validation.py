"""Payload validation against the request schema, with errors that name the JSON path and what was expected."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from runtime.binding.bounded_schema import FORMAT_CHECKER, BoundedDraft7Validator
from runtime.config import Limits
from runtime.errors import InvalidTaskInput, SchemaViolation
from runtime.florence2 import get_task, split_task
from runtime.spec import request_schema
from runtime.untrusted import check_json

# Errors from these keywords say which branch failed less precisely than an error deeper in the document.
_WEAK = frozenset({"anyOf", "oneOf", "allOf", "if", "then"})
# Their own wording is more precise than the node's "x-expected".
_OWN_WORDING = frozenset({"required", "additionalProperties"})


# The request options the server bounds, and the setting that bounds each.
BOUNDED_OPTIONS: dict[str, str] = {
    "max_tokens": "FLORENCE_MAX_NEW_TOKENS",
    "max_completion_tokens": "FLORENCE_MAX_NEW_TOKENS",
    "num_beams": "FLORENCE_MAX_NUM_BEAMS",
}


def limited_request_schema(limits: Limits) -> dict[str, Any]:
    """The request schema with the server's bounds as maximums: what the binding validates with and what
    /openapi.json publishes (every spelling of an option is bounded, even where another one wins)."""
    schema = request_schema()
    bounds = {"FLORENCE_MAX_NEW_TOKENS": limits.max_new_tokens, "FLORENCE_MAX_NUM_BEAMS": limits.max_num_beams}
    for name, setting in BOUNDED_OPTIONS.items():
        option = schema["properties"][name]
        limit = bounds[setting]
        option["maximum"] = limit
        option["description"] = f"at most {setting}"
        option["x-expected"] = f"an integer from {option['minimum']} to {limit} (the server's {setting})"
    return schema


class PayloadValidator:
    def __init__(self, schema: Mapping[str, Any] | None = None) -> None:
        schema = dict(schema) if schema is not None else request_schema()
        Draft7Validator.check_schema(schema)
        # The format checker makes "format": "uri" count; without one jsonschema treats formats as annotations.
        self._validator = BoundedDraft7Validator(schema, format_checker=FORMAT_CHECKER)

    def validate(self, payload: Any) -> None:
        if not isinstance(payload, Mapping):
            raise SchemaViolation(f"the payload must be a JSON object with messages, got {_brief(payload)}")
        check_json(payload)  # a payload from a function has not been through parse_json: depth and surrogates
        errors = list(self._validator.iter_errors(payload))
        if errors:
            error = min(errors, key=lambda e: (-len(e.absolute_path), e.validator in _WEAK))
            raise SchemaViolation(describe(error), param=json_path(error))


def json_path(error: ValidationError) -> str:
    path = error.json_path
    return path[2:] if path.startswith("$.") else path.replace("$", "payload", 1)


def describe(error: ValidationError) -> str:
    where = json_path(error)
    if where.endswith(".text") and isinstance(error.instance, str):
        hint = _task_hint(error.instance)
        if hint:
            return f"{where}: {hint}"
    expected = error.schema.get("x-expected") if isinstance(error.schema, Mapping) else None
    if expected and error.validator not in _OWN_WORDING:
        why = f" ({error.cause})" if error.validator == "format" and error.cause else ""
        return f"{where}: expected {expected}; got {_brief(error.instance)}{why}"
    return f"{where}: {_shorten(error.message)}"


def _task_hint(text: str) -> str | None:
    """The task table's own explanation of a bad text part (did-you-mean, region format), when it has one."""
    if "<PHRASE_GROUNDING>" in text:
        return f"the phrase grounding tag is <CAPTION_TO_PHRASE_GROUNDING>; got {_brief(text)}"
    try:
        tag, text_input = split_task(text)
        get_task(tag).check_input(text_input)
    except InvalidTaskInput as exc:
        return exc.message
    return None


def _brief(value: Any, limit: int = 80) -> str:
    """The start of ``value`` as JSON; encoded lazily, so a huge value costs no more than a small one."""
    text = ""
    try:
        for piece in json.JSONEncoder(ensure_ascii=False).iterencode(value):
            text += piece
            if len(text) > limit:
                break
    except (TypeError, ValueError):
        text = repr(value)[: limit + 1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shorten(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
