"""A validated payload read into what the binding acts on: the image URL, the engine's query (task and generation
options) and how to answer. The payload's bounds are the schema's (``limited_request_schema``), checked before."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.engine.api import TaskQuery
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
    query: TaskQuery  # ignore_eos is vLLM's extension: generate max_new_tokens whatever the model says (benchmarks)
    stream: bool
    include_usage: bool
    ignored_fields: tuple[str, ...]


def read_request(payload: Mapping[str, Any]) -> CompletionRequest:
    """Read a payload that passed the schema (one message, one image part, one text part, options in bounds)."""
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
        query=TaskQuery(
            task=task,
            text_input=text_input,
            max_new_tokens=_first(payload, ("max_completion_tokens", "max_tokens")),
            num_beams=_first(payload, ("num_beams",)),
            ignore_eos=bool(payload.get("ignore_eos", False)),
        ),
        stream=bool(payload.get("stream", False)),
        include_usage=bool(stream_options.get("include_usage", False)),
        ignored_fields=ignored,
    )


def _field_list(names: tuple[str, ...], shown: int = 10) -> str:
    """Field names as a log line may hold them: quoted and escaped, at most ``shown`` of them."""
    listed = ", ".join(quote(name, 40) for name in names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


def _first(payload: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    """The first of ``names`` given: they are spellings of one option, preferred first (the schema bounded each)."""
    values = [payload[name] for name in names if payload.get(name) is not None]
    return int(values[0]) if values else None
