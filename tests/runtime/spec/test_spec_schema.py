"""The shipped request schema: the published one kept verbatim, and each documented correction shown to matter."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fakes import payload
from jsonschema import Draft7Validator

from runtime.florence2 import TASKS, InputKind
from runtime.spec import CORRECTIONS, published_request_schema, request_schema

SHARED_COPY = Path(__file__).resolve().parents[3].parent / "shared" / "spec" / "published-request.schema.json"
EXAMPLE_INPUT = {InputKind.NONE: "", InputKind.REGION: "<loc_52><loc_332><loc_932><loc_774>", InputKind.TEXT: "a car"}


def _valid(schema: dict[str, Any], document: Any) -> bool:
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER).is_valid(document)


def _content(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(parts)}]}


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/photo.jpg"}}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@pytest.mark.skipif(not SHARED_COPY.is_file(), reason="the platform's spec folder is not beside the checkout")
def test_published_copy_is_verbatim() -> None:
    assert published_request_schema() == json.loads(SHARED_COPY.read_text())


def test_both_schemas_are_valid_draft7() -> None:
    Draft7Validator.check_schema(published_request_schema())
    Draft7Validator.check_schema(request_schema())


# (what the published schema says, what ours says, document): each row is one documented correction.
CORRECTION_CASES = [
    pytest.param(
        False, True, _content(IMAGE, _text("<CAPTION_TO_PHRASE_GROUNDING>A green car")), id="phrase-grounding"
    ),
    pytest.param(True, False, _content(_text("<CAPTION>"), _text("<OD>")), id="no-image"),
    pytest.param(True, False, _content(IMAGE), id="no-text"),
    pytest.param(True, False, _content(), id="empty-content"),
    pytest.param(True, False, {"messages": []}, id="no-message"),
    pytest.param(True, False, {"messages": [_content(IMAGE, _text("<OD>"))["messages"][0]] * 2}, id="two-messages"),
    pytest.param(True, False, _content(IMAGE, _text("hello <REGION_TO_CATEGORY>")), id="unanchored-pattern"),
    pytest.param(True, False, _content(IMAGE, _text("<REGION_TO_CATEGORY><loc_1><loc_2><loc_3>")), id="short-region"),
    pytest.param(True, False, _content(IMAGE, _text("<REGION_TO_CATEGORY>the dog")), id="region-as-text"),
    pytest.param(True, False, _content(IMAGE, _text("<OPEN_VOCABULARY_DETECTION>")), id="missing-text-input"),
    pytest.param(True, False, _content(IMAGE, _text("<OPEN_VOCABULARY_DETECTION>a <loc_5> b")), id="tag-in-input"),
    pytest.param(True, False, {**_content(IMAGE, _text("<OD>")), "max_tokens": "ten"}, id="max-tokens-type"),
    pytest.param(True, False, {**_content(IMAGE, _text("<OD>")), "stream": "yes"}, id="stream-type"),
]


@pytest.mark.parametrize(("published", "ours", "document"), CORRECTION_CASES)
def test_correction(published: bool, ours: bool, document: dict[str, Any]) -> None:
    assert _valid(published_request_schema(), document) is published
    assert _valid(request_schema(), document) is ours


def test_every_correction_is_documented_in_the_module_doc() -> None:
    import runtime.spec

    assert len(CORRECTIONS) >= 8
    for line in CORRECTIONS:
        assert line in (runtime.spec.__doc__ or "")


def test_uri_format_is_enforced_with_the_format_checker() -> None:
    document = _content({"type": "image_url", "image_url": {"url": "not a url"}}, _text("<OD>"))
    assert not _valid(request_schema(), document)
    assert Draft7Validator(request_schema()).is_valid(document)  # why the format checker matters
    assert _valid(request_schema(), payload("<OD>"))  # data: URLs are URIs


@pytest.mark.parametrize("tag", [tag for tag in TASKS if tag != "<REGION_TO_OCR>"])
def test_every_platform_task_is_accepted(tag: str) -> None:
    text = tag + EXAMPLE_INPUT[TASKS[tag].input_kind]
    assert _valid(request_schema(), _content(IMAGE, _text(text)))


def test_tags_match_the_task_table() -> None:
    text_schema = request_schema()["definitions"]["text_part"]["properties"]["text"]["anyOf"]
    named = set(text_schema[0]["enum"])
    for branch in text_schema[1:]:
        alternatives = re.search(r"\^<\(([^)]*)\)>", branch["pattern"])
        assert alternatives is not None
        named |= {f"<{tag}>" for tag in alternatives.group(1).split("|")}
    assert named == set(TASKS) - {"<REGION_TO_OCR>"}


def test_region_to_ocr_stays_out() -> None:
    document = _content(IMAGE, _text("<REGION_TO_OCR><loc_1><loc_2><loc_3><loc_4>"))
    assert not _valid(request_schema(), document)
