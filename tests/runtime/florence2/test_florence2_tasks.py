"""The task table against the platform's list and transformers' processor; tag splitting and input checks."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.errors import InvalidTaskInput
from runtime.florence2 import TASKS, InputKind, ParseType, get_task, split_task

# The tags of the platform's model page (spec/florence-2-large.md) with the input each takes, plus <REGION_TO_OCR>.
PLATFORM_TAGS = {
    "<CAPTION>": InputKind.NONE,
    "<DETAILED_CAPTION>": InputKind.NONE,
    "<MORE_DETAILED_CAPTION>": InputKind.NONE,
    "<OCR>": InputKind.NONE,
    "<OCR_WITH_REGION>": InputKind.NONE,
    "<REGION_PROPOSAL>": InputKind.NONE,
    "<OD>": InputKind.NONE,
    "<DENSE_REGION_CAPTION>": InputKind.NONE,
    "<REGION_TO_SEGMENTATION>": InputKind.REGION,
    "<REGION_TO_CATEGORY>": InputKind.REGION,
    "<REGION_TO_DESCRIPTION>": InputKind.REGION,
    "<REGION_TO_OCR>": InputKind.REGION,
    "<CAPTION_TO_PHRASE_GROUNDING>": InputKind.TEXT,
    "<OPEN_VOCABULARY_DETECTION>": InputKind.TEXT,
    "<REFERRING_EXPRESSION_SEGMENTATION>": InputKind.TEXT,
}
REGION = "<loc_52><loc_332><loc_932><loc_774>"


def test_table_has_every_platform_tag_with_its_input_kind() -> None:
    assert {tag: task.input_kind for tag, task in TASKS.items()} == PLATFORM_TAGS


def test_table_matches_transformers_prompts_and_parse_types(oracle: Any) -> None:
    assert {t: TASKS[t].prompt for t in oracle.task_prompts_without_inputs} == oracle.task_prompts_without_inputs
    assert {t: TASKS[t].prompt for t in oracle.task_prompts_with_input} == oracle.task_prompts_with_input
    assert set(TASKS) == set(oracle.task_prompts_without_inputs) | set(oracle.task_prompts_with_input)
    assert {t: TASKS[t].parse_type.value for t in TASKS} == oracle.tasks_answer_post_processing_type
    for tag, task in TASKS.items():
        assert (task.input_kind is InputKind.NONE) == (tag in oracle.task_prompts_without_inputs)


def test_text_tasks_are_the_pure_text_ones() -> None:
    text = {tag for tag, task in TASKS.items() if task.is_text}
    assert text == {
        "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<OCR>",
        "<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_OCR>",
    }  # fmt: skip
    assert all(TASKS[t].parse_type is ParseType.PURE_TEXT for t in text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<CAPTION>", ("<CAPTION>", None)),
        ("  <OD>  ", ("<OD>", None)),
        (f"<REGION_TO_CATEGORY>{REGION}", ("<REGION_TO_CATEGORY>", REGION)),
        (f"<REGION_TO_CATEGORY> {REGION} ", ("<REGION_TO_CATEGORY>", REGION)),
        ("<CAPTION_TO_PHRASE_GROUNDING>A green car parked in front of a door", None),
        ("<OPEN_VOCABULARY_DETECTION>\n  a <red> car\t", ("<OPEN_VOCABULARY_DETECTION>", "a <red> car")),
        ("<OCR>   ", ("<OCR>", None)),
    ],
)
def test_split_task(text: str, expected: tuple[str, str | None] | None) -> None:
    if expected is None:
        expected = ("<CAPTION_TO_PHRASE_GROUNDING>", "A green car parked in front of a door")
    assert split_task(text) == expected


@pytest.mark.parametrize(
    ("text", "message_part"),
    [
        ("<PHRASE_GROUNDING>a car", "did you mean <CAPTION_TO_PHRASE_GROUNDING>?"),
        ("<caption>", "did you mean <CAPTION>?"),
        ("<DETAILED_CAPTON>", "did you mean <DETAILED_CAPTION>?"),
        ("<REGION_TO_CATEGORIES><loc_1>", "did you mean <REGION_TO_CATEGORY>?"),
        ("describe this image", "must start with a task tag"),
        ("", "must start with a task tag"),
        ("CAPTION", "did you mean <CAPTION>?"),
        ("<OD", "must start with a task tag"),
        ("<NOTHING_LIKE_ANY_TAG_AT_ALL_XYZ>", "known tags: <CAPTION>"),
    ],
)
def test_unknown_tags_are_refused_with_a_suggestion(text: str, message_part: str) -> None:
    with pytest.raises(InvalidTaskInput) as caught:
        split_task(text)
    assert message_part in caught.value.message
    assert caught.value.status == 400 and caught.value.code == "invalid_task_input"


def test_get_task_refuses_unknown_tags() -> None:
    with pytest.raises(InvalidTaskInput, match="unknown task tag '<CAPTIONS>'; did you mean <CAPTION>"):
        get_task("<CAPTIONS>")


@pytest.mark.parametrize("tag", [t for t, k in PLATFORM_TAGS.items() if k is InputKind.NONE])
def test_no_input_tags_refuse_input(tag: str) -> None:
    assert TASKS[tag].check_input(None) is None
    assert TASKS[tag].check_input("  ") is None
    with pytest.raises(InvalidTaskInput, match=f"{tag} takes no input, but got 'a car'"):
        TASKS[tag].check_input(" a car")


@pytest.mark.parametrize("tag", [t for t, k in PLATFORM_TAGS.items() if k is not InputKind.NONE])
@pytest.mark.parametrize("value", [None, "", " \n\t "])
def test_input_tags_need_input(tag: str, value: str | None) -> None:
    with pytest.raises(InvalidTaskInput, match=f"{tag} needs"):
        TASKS[tag].check_input(value)


@pytest.mark.parametrize(
    "region",
    [
        "<loc_1><loc_2><loc_3>",
        "<loc_1><loc_2><loc_3><loc_4><loc_5>",
        "<loc_1000><loc_2><loc_3><loc_4>",
        "<loc_01><loc_2><loc_3><loc_4>",
        "<loc_-1><loc_2><loc_3><loc_4>",
        "<loc_1> <loc_2><loc_3><loc_4>",
        "<loc_1><loc_2><loc_3><loc_4> the car",
        "car <loc_1><loc_2><loc_3><loc_4>",
        "<loc_1><loc_2><loc_3><loc_4><sep>",
        "<loc_١><loc_2><loc_3><loc_4>",  # an Arabic-Indic digit: \d would take it, the tokenizer has no such token
        "52, 332, 932, 774",
    ],
)
@pytest.mark.parametrize("tag", [t for t, k in PLATFORM_TAGS.items() if k is InputKind.REGION])
def test_malformed_regions_are_refused(tag: str, region: str) -> None:
    with pytest.raises(InvalidTaskInput, match="exactly four location tokens") as caught:
        TASKS[tag].check_input(region)
    assert tag in caught.value.message


@pytest.mark.parametrize("region", [REGION, "<loc_0><loc_0><loc_999><loc_999>", f"  {REGION}\n"])
def test_well_formed_regions_pass_stripped(region: str) -> None:
    assert TASKS["<REGION_TO_DESCRIPTION>"].check_input(region) == region.strip()


@pytest.mark.parametrize("inner", ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>", "<image>"])
def test_text_inputs_may_not_smuggle_tags(inner: str) -> None:
    with pytest.raises(InvalidTaskInput, match=f"may not contain {inner}"):
        TASKS["<OPEN_VOCABULARY_DETECTION>"].check_input(f"a car {inner} and a door")


def test_render_fills_the_template() -> None:
    assert TASKS["<OD>"].render(None) == "Locate the objects with category name in the image."
    assert TASKS["<REGION_TO_CATEGORY>"].render(REGION) == f"What is the region {REGION}?"
    assert TASKS["<OPEN_VOCABULARY_DETECTION>"].render("  a car ") == "Locate a car in the image."
