"""Generated text to ``{"<TAG>": result}`` in pixels of the original image, as transformers does it without torch.

This is ``Florence2Processor.post_process_generation`` and ``Florence2PostProcessor`` (transformers 4.57) rewritten
step for step on the same regular expressions, with the coordinate arithmetic of ``coordinates.py``; results are
plain lists of Python ints and strings, ready for JSON. Three of upstream's patterns backtrack quadratically on long
unparsable text, so linear scanners stand in for them (``find_ocr_items``, ``find_phrase_runs``) and return the same
matches. Tests compare everything with transformers on the documented examples and on generated token sequences.

Deliberate differences from transformers (none changes a result transformers returns):
- Post-processing types missing from ``post_processor_config`` take the defaults (the built-in OCR pattern, area
  threshold 0, no banned grounding phrases) where transformers raises "Unsupported parse task".
- A location bin too large for an int64 (a ``<loc_...>`` spelled out of ordinary characters with 19+ digits) gives
  the overflow value -2147483648, as every bin past the int32 range already does in transformers on x86; transformers
  raises there instead ("Overflow when unpacking long long").
- Tags outside the task table are refused before generation, so they never reach post-processing (transformers
  parses them as pure text).
- ``with_box_at_start`` of the polygon parser is left out: no task enables it.
"""

from __future__ import annotations

import re
from typing import Any

from runtime.florence2.configs import DEFAULT_OCR_PATTERN, ParseConfig
from runtime.florence2.coordinates import dequantize
from runtime.florence2.tasks import ParseType, Task

_BOX = re.compile(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")
_LOC = re.compile(r"<loc_(\d+)>")
_BOX_RUN = re.compile(r"(?:<loc_\d+>){4,}")
_PHRASE_BEFORE_BOX = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)")
_POLYGON_RUN = re.compile(r"(?:<loc_\d+>|<sep>|<poly>|</poly>){4,}")
_PHRASE_BEFORE_POLYGON = re.compile(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_|<poly>)")
_POLY_INSTANCE = re.compile(r"<poly>(.*?)</poly>")
_POLY_PART = re.compile(r"((?:<loc_\d+>)+)(?:<sep>|$)")
_LEADING_LOC = re.compile(r"^<loc_\d+>")


def post_process(text: str, task: Task, image_size: tuple[int, int], config: ParseConfig) -> dict[str, Any]:
    """``{task.tag: result}``; ``image_size`` is (width, height) of the original image."""
    kind = task.parse_type
    answer: Any
    if kind is ParseType.PURE_TEXT:
        answer = text.replace("<s>", "").replace("</s>", "").strip()
    elif kind is ParseType.OCR:
        items = parse_ocr(text, image_size, config)
        answer = {"quad_boxes": [box for box, _ in items], "labels": [label for _, label in items]}
    elif kind is ParseType.PHRASE_GROUNDING:
        pairs = [(box, phrase) for phrase, boxes in parse_phrase_grounding(text, image_size, config) for box in boxes]
        answer = {"bboxes": [box for box, _ in pairs], "labels": [label for _, label in pairs]}
    elif kind in (ParseType.DESCRIPTION_WITH_BBOXES, ParseType.BBOXES):
        items = parse_boxes(text, image_size, allow_empty_phrase=kind is ParseType.BBOXES)
        answer = {"bboxes": [box for box, _ in items], "labels": [label for _, label in items]}
    elif kind in (ParseType.DESCRIPTION_WITH_POLYGONS, ParseType.POLYGONS):
        shapes = parse_polygons(text, image_size, allow_empty_phrase=kind is ParseType.POLYGONS)
        answer = {"polygons": [polys for polys, _ in shapes], "labels": [label for _, label in shapes]}
    else:  # DESCRIPTION_WITH_BBOXES_OR_POLYGONS: the parser is chosen by the whole text, as upstream does
        if "<poly>" in text:
            shapes = parse_polygons(text, image_size, allow_empty_phrase=False)
            answer = {"bboxes": [], "bboxes_labels": [], "polygons": [p for p, _ in shapes]}
            answer["polygons_labels"] = [label for _, label in shapes]
        else:
            items = parse_boxes(text, image_size, allow_empty_phrase=False)
            answer = {"bboxes": [b for b, _ in items], "bboxes_labels": [label for _, label in items]}
            answer |= {"polygons": [], "polygons_labels": []}
    return {task.tag: answer}


def _strip_specials(text: str) -> str:
    return text.replace("<s>", "").replace("</s>", "").replace("<pad>", "")


def parse_ocr(text: str, image_size: tuple[int, int], config: ParseConfig) -> list[tuple[list[int], str]]:
    """(quad box [x1, y1, ..., x4, y4], text) per item."""
    width, height = image_size
    items = []
    text = _strip_specials(text)
    matches = (
        find_ocr_items(text) if config.ocr_pattern == DEFAULT_OCR_PATTERN else re.findall(config.ocr_pattern, text)
    )
    for content, *quad_str in matches:
        quad_box = dequantize([int(i) for i in quad_str], image_size)
        if config.ocr_area_threshold > 0:
            xs, ys = quad_box[0::2], quad_box[1::2]
            # Upstream's shoelace sum stops one edge short of closing the quad; kept so the same boxes pass.
            area = 0.5 * abs(sum(xs[i] * ys[i + 1] - xs[i + 1] * ys[i] for i in range(4 - 1)))
            if area < (width * height) * config.ocr_area_threshold:
                continue
        items.append((quad_box, content.strip()))
    return items


def parse_phrase_grounding(
    text: str, image_size: tuple[int, int], config: ParseConfig
) -> list[tuple[str, list[list[int]]]]:
    """(phrase, its boxes) per grounded phrase; banned phrases (pronouns, "the image" ...) are dropped."""
    instances = []
    for phrase_text in find_phrase_runs(_strip_specials(text), _BOX_RUN):
        phrase_text = phrase_text.replace("<ground>", "", 1).replace("<obj>", "", 1)
        if not phrase_text:
            continue
        match = _PHRASE_BEFORE_BOX.search(phrase_text)
        if not match:
            continue
        phrase = match.group().strip()
        if phrase in config.banned_grounding_tokens:
            continue
        boxes = _boxes(phrase_text, image_size)
        if not boxes:
            continue
        instances.append((phrase.encode("ascii", "ignore").decode("ascii"), boxes))
    return instances


def parse_boxes(text: str, image_size: tuple[int, int], *, allow_empty_phrase: bool) -> list[tuple[list[int], str]]:
    """(box [x1, y1, x2, y2], label) per box; a phrase followed by several boxes labels each of them."""
    text = _strip_specials(text)
    items = []
    for phrase_text in _BOX_RUN.findall(text) if allow_empty_phrase else find_phrase_runs(text, _BOX_RUN):
        phrase_text = phrase_text.replace("<ground>", "", 1).replace("<obj>", "", 1)
        if not phrase_text and not allow_empty_phrase:
            continue
        match = _PHRASE_BEFORE_BOX.search(phrase_text)
        if not match:
            continue
        phrase = match.group().strip().encode("ascii", "ignore").decode("ascii")
        items.extend((box, phrase) for box in _boxes(phrase_text, image_size))
    return items


def parse_polygons(
    text: str, image_size: tuple[int, int], *, allow_empty_phrase: bool
) -> list[tuple[list[list[int]], str]]:
    """(polygons [[x1, y1, x2, y2, ...], ...], label) per instance; <sep> splits an instance into polygons."""
    text = _strip_specials(text)
    shapes = []
    for phrase_text in _POLYGON_RUN.findall(text) if allow_empty_phrase else find_phrase_runs(text, _POLYGON_RUN):
        stripped = _LEADING_LOC.sub("", phrase_text, count=1)
        if not stripped and not allow_empty_phrase:
            continue
        match = _PHRASE_BEFORE_POLYGON.search(stripped)
        if not match:
            continue
        phrase = match.group().strip()
        if "<poly>" in phrase_text and "</poly>" in phrase_text:
            instances = [m.group(1) for m in _POLY_INSTANCE.finditer(phrase_text)]
        else:
            instances = [phrase_text]
        for instance in instances:
            parts = [m.group(1) for m in _POLY_PART.finditer(instance)]
            if not parts:
                continue
            polygons = []
            for part in parts:
                bins = [int(m.group(1)) for m in _LOC.finditer(part)]
                polygons.append(dequantize(bins[: len(bins) - len(bins) % 2], image_size))
            shapes.append((polygons, phrase))
    return shapes


def _boxes(phrase_text: str, image_size: tuple[int, int]) -> list[list[int]]:
    bins = [int(b) for m in _BOX.finditer(phrase_text) for b in m.groups()]
    flat = dequantize(bins, image_size)
    return [flat[i : i + 4] for i in range(0, len(flat), 4)]


# Upstream's patterns backtrack quadratically on long text that does not parse (a random-weight model writes such
# text for a thousand tokens: ~0.5 s a call). The scanners below return exactly what ``re.findall`` returns for
# them, in linear time; tests compare both on generated text.

_OCR_QUAD = re.compile(r"<loc_(\d+)>" * 8)
_OCR_QUAD_AHEAD = re.compile(rf"(?={_OCR_QUAD.pattern})")


def find_ocr_items(text: str) -> list[tuple[str, ...]]:
    """``re.findall(DEFAULT_OCR_PATTERN, text)``: ``(.+?)`` then eight ``<loc_N>``.

    From a start ``s`` the lazy ``.+?`` stops at the first quad starting after ``s``, unless a newline (which ``.``
    does not match) comes first; then no start up to that newline can match, and the scan resumes after it.
    """
    quads = [m.start() for m in _OCR_QUAD_AHEAD.finditer(text)]
    items: list[tuple[str, ...]] = []
    start, q = 0, 0
    while True:
        while q < len(quads) and quads[q] < start + 1:
            q += 1
        if q == len(quads):
            return items
        newline = text.find("\n", start, quads[q])
        if newline != -1:
            start = newline + 1
            continue
        quad = _OCR_QUAD.match(text, quads[q])
        assert quad is not None  # the lookahead found it there
        items.append((text[start : quads[q]], *quad.groups()))
        start = quad.end()


def find_phrase_runs(text: str, tokens: re.Pattern[str]) -> list[str]:
    """``re.findall(f"([^<]+{tokens})", text)`` for a ``tokens`` pattern that starts with ``<``.

    ``[^<]+`` can only hand over to ``tokens`` where its run of non-``<`` characters ends, so each start inside a
    run succeeds or fails with the run's first character; a failed run is skipped whole.
    """
    runs: list[str] = []
    start, size = 0, len(text)
    while start < size:
        if text[start] == "<":
            start += 1
            continue
        end = text.find("<", start)
        if end == -1:
            return runs
        match = tokens.match(text, end)
        if match is None:
            start = end + 1
            continue
        runs.append(text[start : match.end()])
        start = match.end()
    return runs
