"""The request schema: the platform's published one, corrected, shipped as package data.

``published-request.schema.json`` is the platform's schema exactly as published; ``request.schema.json`` is what
the binding validates against. Its corrections, each covered by a test that shows the published schema gets the
case wrong and ours gets it right:
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

CORRECTIONS: tuple[str, ...] = (
    "Phrase grounding is accepted under its documented tag `<CAPTION_TO_PHRASE_GROUNDING>`; the published pattern "
    "named `<PHRASE_GROUNDING>`, so phrase grounding was rejected.",
    "Exactly one image part and one text part are required (`minItems`/`maxItems` 2 plus a `contains` for each "
    "type); the published schema accepted a message without an image, two texts, or an empty content array.",
    "Exactly one message, with role `user`; the published schema allowed any number of messages, none included.",
    "Task patterns are anchored: the text is the tag itself, or the tag directly followed by its input. The "
    "published patterns matched anywhere in the text, so `hello <REGION_TO_CATEGORY>` passed.",
    "Region tasks (`<REGION_TO_SEGMENTATION>`, `<REGION_TO_CATEGORY>`, `<REGION_TO_DESCRIPTION>`) require exactly "
    "four `<loc_0>`..`<loc_999>` tokens after the tag; free-text tasks (`<CAPTION_TO_PHRASE_GROUNDING>`, "
    "`<OPEN_VOCABULARY_DETECTION>`, `<REFERRING_EXPRESSION_SEGMENTATION>`) require non-blank text without `<...>` "
    "tags (the published schema rejected only the eight no-input tags inside it).",
    "Content parts are told apart by `type` (`if`/`then`) instead of `oneOf`, so an error names the failing field "
    "rather than reporting that no branch matched.",
    "`format: uri` is enforced: the binding validates with a format checker (RFC 3986, in time linear in the "
    "length: see runtime/binding/bounded_schema.py; URLs over 8192 characters, data: URL payloads aside, are "
    "refused). `data:` URLs are valid URIs; the scheme (http, https, data) and the image itself are checked after "
    "validation.",
    "Generation options are declared: `max_tokens` (and its newer name `max_completion_tokens`), `num_beams`, "
    "vLLM's `ignore_eos` (true: generate max_tokens tokens whatever the model says, for benchmarks), `stream`, "
    "`stream_options.include_usage`, plus `model` for HTTP requests. Their upper bounds are settings "
    "(FLORENCE_MAX_NEW_TOKENS, FLORENCE_MAX_NUM_BEAMS), which the server adds to this schema as maximums "
    "(runtime/binding/validation.py). Other fields are ignored and logged, "
    "as OpenAI clients send options Florence-2 has no use for "
    "(temperature, top_p ...).",
    "`<REGION_TO_OCR>`, which upstream Florence-2 knows, stays out: the platform does not list it.",
)

__doc__ = (__doc__ or "") + "".join(f"\n- {line}" for line in CORRECTIONS) + "\n"

SCHEMA_FILE = "request.schema.json"
PUBLISHED_SCHEMA_FILE = "published-request.schema.json"


@cache
def _load(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def request_schema() -> dict[str, Any]:
    """The corrected request schema (a fresh copy: callers may not change the shared one)."""
    return json.loads(_load(SCHEMA_FILE))


def published_request_schema() -> dict[str, Any]:
    """The platform's schema as published, defects included (tests compare against it)."""
    return json.loads(_load(PUBLISHED_SCHEMA_FILE))
