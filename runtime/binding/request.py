"""A validated payload read into what the binding acts on: the image URL, the task and generation options."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.config import Limits
from runtime.errors import SchemaViolation
from runtime.florence2 import split_task
from runtime.untrusted import quote

log = logging.getLogger(__name__)

KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "num_beams",
        "ignore_eos",
        "stream",
        "stream_options",
    }
)


@dataclass(frozen=True)
class CompletionRequest:
    image_url: str
    image_param: str  # for errors about the image: the caller's parameter, else the URL's JSON path
    text: str
    task: str
    text_input: str | None
    max_new_tokens: int | None
    num_beams: int | None
    ignore_eos: bool  # vLLM's extension: generate max_new_tokens whatever the model says (benchmarks)
    stream: bool
    include_usage: bool
    ignored_fields: tuple[str, ...]


def read_request(payload: Mapping[str, Any], limits: Limits) -> CompletionRequest:
    """Read a payload that passed the schema (one message, one image part, one text part)."""
    content = payload["messages"][0]["content"]
    image_index = next(i for i, part in enumerate(content) if part["type"] == "image_url")
    text_index = next(i for i, part in enumerate(content) if part["type"] == "text")
    text = content[text_index]["text"]
    task, text_input = split_task(text)
    ignored = tuple(sorted(key for key in payload if key not in KNOWN_FIELDS))
    if ignored:
        log.info("ignoring request fields Florence-2 has no use for: %s", _field_list(ignored))
    stream_options = payload.get("stream_options") or {}
    image_url = content[image_index]["image_url"]["url"]
    return CompletionRequest(
        image_url=image_url,
        # a function's URL from runtime.functions.helpers says which of its client's parameters it came from
        image_param=getattr(image_url, "param", None) or f"messages[0].content[{image_index}].image_url.url",
        text=text,
        task=task,
        text_input=text_input,
        max_new_tokens=_bounded(
            payload, ("max_completion_tokens", "max_tokens"), limits.max_new_tokens, "FLORENCE_MAX_NEW_TOKENS"
        ),
        num_beams=_bounded(payload, ("num_beams",), limits.max_num_beams, "FLORENCE_MAX_NUM_BEAMS"),
        ignore_eos=bool(payload.get("ignore_eos", False)),
        stream=bool(payload.get("stream", False)),
        include_usage=bool(stream_options.get("include_usage", False)),
        ignored_fields=ignored,
    )


def _field_list(names: tuple[str, ...], shown: int = 10) -> str:
    """Field names as a log line may hold them: quoted and escaped, at most ``shown`` of them."""
    listed = ", ".join(quote(name, 40) for name in names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def _bounded(payload: Mapping[str, Any], names: tuple[str, ...], limit: int, setting: str) -> int | None:
    """The first of ``names`` given (they are spellings of one option, preferred first); every one given is
    checked against ``limit``, so an out-of-range value is refused even where another spelling wins."""
    values = [(name, payload[name]) for name in names if payload.get(name) is not None]
    for name, value in values:
        if value > limit:
            raise SchemaViolation(f"{name}: expected at most {limit} (the server's {setting}); got {value}", param=name)
    return int(values[0][1]) if values else None
