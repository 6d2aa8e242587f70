"""Validation errors name the JSON path and what was expected."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import payload

from runtime.binding.validation import PayloadValidator
from runtime.errors import SchemaViolation

VALIDATOR = PayloadValidator()


def _error(document: Any) -> SchemaViolation:
    with pytest.raises(SchemaViolation) as caught:
        VALIDATOR.validate(document)
    return caught.value


def test_valid_payload_passes() -> None:
    VALIDATOR.validate(payload("<OD>"))
    VALIDATOR.validate(
        payload("<CAPTION_TO_PHRASE_GROUNDING>A green car", max_tokens=20, stream=False, temperature=0.2)
    )


def test_unknown_tag_names_the_path_and_suggests() -> None:
    error = _error(payload("<CAPTON>"))
    assert error.param == "messages[0].content[1].text"
    assert error.message.startswith("messages[0].content[1].text: ")
    assert "did you mean <CAPTION>" in error.message
    assert error.status == 400 and error.code == "invalid_payload"


def test_published_phrase_grounding_tag_gets_a_pointer() -> None:
    error = _error(payload("<PHRASE_GROUNDING>a car"))
    assert "<CAPTION_TO_PHRASE_GROUNDING>" in error.message


def test_malformed_region_explains_the_format() -> None:
    error = _error(payload("<REGION_TO_CATEGORY><loc_1><loc_2>"))
    assert "four location tokens" in error.message


def test_region_to_ocr_is_refused_with_the_list_of_tasks() -> None:
    error = _error(payload("<REGION_TO_OCR><loc_1><loc_2><loc_3><loc_4>"))
    assert "expected a task tag" in error.message


def test_missing_image_part() -> None:
    document = payload()
    document["messages"][0]["content"] = [{"type": "text", "text": "<OD>"}, {"type": "text", "text": "<OD>"}]  # type: ignore[index]
    error = _error(document)
    assert error.param == "messages[0].content"
    assert "no image_url part" in error.message


def test_wrong_part_type() -> None:
    document = payload()
    document["messages"][0]["content"][0] = {"type": "input_audio", "data": "..."}  # type: ignore[index]
    error = _error(document)
    assert error.param == "messages[0].content[0].type"
    assert '"image_url" or "text"' in error.message


def test_role_must_be_user() -> None:
    document = payload()
    document["messages"][0]["role"] = "system"  # type: ignore[index]
    error = _error(document)
    assert error.param == "messages[0].role"


def test_bad_url_is_not_echoed_in_full() -> None:
    document = payload(url="not a url " + "x" * 500)
    error = _error(document)
    assert error.param == "messages[0].content[0].image_url.url"
    assert "absolute URL" in error.message
    assert len(error.message) < 300


def test_missing_field_uses_the_required_wording() -> None:
    error = _error({"messages": [{"role": "user"}]})
    assert error.param == "messages[0]"
    assert "'content' is a required property" in error.message


def test_non_object_payload() -> None:
    error = _error(["messages"])
    assert "JSON object" in error.message


def test_generation_option_types() -> None:
    error = _error(payload(max_tokens=0))
    assert error.param == "max_tokens"
    error = _error(payload(num_beams=1.5))
    assert error.param == "num_beams"
