"""The Florence-2 task table: each tag's prompt, the input it takes and how its answer is parsed.

The prompts and parse types are those of transformers' ``Florence2Processor`` (and of the released remote-code
processor). A request's text part is a tag, optionally followed by its input; ``split_task`` separates the two and
``Task.check_input`` says whether the input fits the tag.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from runtime.errors import InvalidTaskInput


class InputKind(StrEnum):
    NONE = "none"  # the tag alone
    REGION = "region"  # four location tokens, <loc_x1><loc_y1><loc_x2><loc_y2>
    TEXT = "text"  # free text: a caption, a phrase, an object name


class ParseType(StrEnum):
    """The answer formats of ``Florence2PostProcessor`` (the keys of ``post_processor_config``)."""

    PURE_TEXT = "pure_text"
    OCR = "ocr"
    PHRASE_GROUNDING = "phrase_grounding"
    DESCRIPTION_WITH_BBOXES = "description_with_bboxes"
    DESCRIPTION_WITH_POLYGONS = "description_with_polygons"
    POLYGONS = "polygons"
    BBOXES = "bboxes"
    DESCRIPTION_WITH_BBOXES_OR_POLYGONS = "description_with_bboxes_or_polygons"


@dataclass(frozen=True)
class Task:
    tag: str
    prompt: str  # with "{input}" where the input goes, for tags that take one
    input_kind: InputKind
    parse_type: ParseType

    @property
    def is_text(self) -> bool:
        """True when the answer is plain text (captions, OCR, region category/description/OCR)."""
        return self.parse_type is ParseType.PURE_TEXT

    def check_input(self, text_input: str | None) -> str | None:
        """Return the input as the prompt will use it (stripped), or raise InvalidTaskInput."""
        value = text_input.strip() if text_input is not None else ""
        if self.input_kind is InputKind.NONE:
            if value:
                raise InvalidTaskInput(
                    f"{self.tag} takes no input, but got {_quote(value)}; send the tag alone", param="text"
                )
            return None
        if not value:
            raise InvalidTaskInput(f"{self.tag} needs {_EXPECTED[self.input_kind]} after the tag", param="text")
        if self.input_kind is InputKind.REGION:
            if not _REGION.fullmatch(value):
                raise InvalidTaskInput(
                    f"{self.tag} needs a region of exactly four location tokens <loc_x1><loc_y1><loc_x2><loc_y2> "
                    f"with values 0..999 and nothing else (e.g. {self.tag}<loc_52><loc_332><loc_932><loc_774>), "
                    f"but got {_quote(value)}",
                    param="text",
                )
            return value
        for tag in (*TASKS, IMAGE_TOKEN):
            if tag in value:
                raise InvalidTaskInput(
                    f"the input of {self.tag} may not contain {tag}; send one task per request", param="text"
                )
        return value

    def render(self, text_input: str | None) -> str:
        """The prompt text for this task (without <s> and </s>); the input is validated first."""
        value = self.check_input(text_input)
        return self.prompt if value is None else self.prompt.format(input=value)


IMAGE_TOKEN = "<image>"
_REGION = re.compile(r"(?:<loc_(?:0|[1-9][0-9]{0,2})>){4}")
_EXPECTED = {InputKind.REGION: "a region <loc_x1><loc_y1><loc_x2><loc_y2>", InputKind.TEXT: "text"}

_TABLE: tuple[Task, ...] = (
    Task("<CAPTION>", "What does the image describe?", InputKind.NONE, ParseType.PURE_TEXT),
    Task("<DETAILED_CAPTION>", "Describe in detail what is shown in the image.", InputKind.NONE, ParseType.PURE_TEXT),
    Task(
        "<MORE_DETAILED_CAPTION>",
        "Describe with a paragraph what is shown in the image.",
        InputKind.NONE,
        ParseType.PURE_TEXT,
    ),
    Task("<OCR>", "What is the text in the image?", InputKind.NONE, ParseType.PURE_TEXT),
    Task("<OCR_WITH_REGION>", "What is the text in the image, with regions?", InputKind.NONE, ParseType.OCR),
    Task("<REGION_PROPOSAL>", "Locate the region proposals in the image.", InputKind.NONE, ParseType.BBOXES),
    Task(
        "<OD>",
        "Locate the objects with category name in the image.",
        InputKind.NONE,
        ParseType.DESCRIPTION_WITH_BBOXES,
    ),
    Task(
        "<DENSE_REGION_CAPTION>",
        "Locate the objects in the image, with their descriptions.",
        InputKind.NONE,
        ParseType.DESCRIPTION_WITH_BBOXES,
    ),
    Task(
        "<REGION_TO_SEGMENTATION>", "What is the polygon mask of region {input}", InputKind.REGION, ParseType.POLYGONS
    ),
    Task("<REGION_TO_CATEGORY>", "What is the region {input}?", InputKind.REGION, ParseType.PURE_TEXT),
    Task("<REGION_TO_DESCRIPTION>", "What does the region {input} describe?", InputKind.REGION, ParseType.PURE_TEXT),
    Task("<REGION_TO_OCR>", "What text is in the region {input}?", InputKind.REGION, ParseType.PURE_TEXT),
    Task(
        "<CAPTION_TO_PHRASE_GROUNDING>",
        "Locate the phrases in the caption: {input}",
        InputKind.TEXT,
        ParseType.PHRASE_GROUNDING,
    ),
    Task(
        "<OPEN_VOCABULARY_DETECTION>",
        "Locate {input} in the image.",
        InputKind.TEXT,
        ParseType.DESCRIPTION_WITH_BBOXES_OR_POLYGONS,
    ),
    Task(
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        "Locate {input} in the image with mask",
        InputKind.TEXT,
        ParseType.POLYGONS,
    ),
)

TASKS: Mapping[str, Task] = MappingProxyType({task.tag: task for task in _TABLE})

_LEADING_TAG = re.compile(r"\s*(<[^<>]*>)(.*)", re.DOTALL)


def get_task(tag: str) -> Task:
    """The task of a tag, or InvalidTaskInput naming the closest known tag."""
    task = TASKS.get(tag)
    if task is None:
        raise InvalidTaskInput(f"unknown task tag {_quote(tag)}; {_suggestion(tag)}", param="text")
    return task


def split_task(text: str) -> tuple[str, str | None]:
    """Split a request's text part into its tag and its input (stripped; None when there is none).

    ``"<REGION_TO_CATEGORY><loc_52><loc_332><loc_932><loc_774>"`` -> ``("<REGION_TO_CATEGORY>", "<loc_52>...")``.
    Only the tag is checked here (it must lead the text and be known); ``Task.check_input`` checks the input.
    """
    match = _LEADING_TAG.match(text)
    if match is None:
        raise InvalidTaskInput(
            f"the text must start with a task tag, but got {_quote(text)}; {_suggestion(text)}", param="text"
        )
    tag = get_task(match.group(1)).tag
    rest = match.group(2).strip()
    return tag, rest or None


def _suggestion(text: str) -> str:
    candidate = text.strip().split(">", 1)[0].upper()
    candidate = candidate if candidate.startswith("<") else "<" + candidate
    close = difflib.get_close_matches(candidate + ">", list(TASKS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{hint}known tags: {', '.join(TASKS)}"


def _quote(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")
