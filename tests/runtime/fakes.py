"""Test doubles for the runtime's seams: an engine without a model, a resolver without DNS, and small images.

``FakeEngine`` answers deterministically from the image and the task, so tests can tell that the right image and
task reached it: text tasks describe the image's size and colour, structured tasks box its halves.
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from PIL import Image

from runtime.engine.api import ModelInfo, TaskQuery, TaskRequest, TaskResult
from runtime.errors import InvalidTaskInput
from runtime.florence2 import TASKS, ParseType, get_task
from runtime.media.addresses import IPAddress

COLOUR_NAMES = {(255, 0, 0): "red", (0, 255, 0): "green", (0, 0, 255): "blue", (255, 255, 255): "white"}


class FakeEngine:
    TIMINGS: ClassVar[dict[str, float]] = {
        "queue": 0.001,
        "preprocess": 0.002,
        "vision": 0.003,
        "encoder": 0.004,
        "decode": 0.005,
    }

    def __init__(self, name: str = "fake", *, random_weights: bool = False, max_new_tokens: int = 64) -> None:
        self.info = ModelInfo(
            name=name,
            path=f"/models/{name}",
            random_weights=random_weights,
            variant="fp32",
            providers=("FakeProvider",),
        )
        self.requests: list[TaskRequest] = []
        self.max_new_tokens = max_new_tokens
        self.delay_s = 0.0
        self.hold: asyncio.Event | None = None  # when set, requests wait for it (capacity tests)
        self.fail_with: Exception | None = None
        self.closed = False

    def is_text_task(self, task: str) -> bool:
        return get_task(task).is_text

    def validate(self, request: TaskRequest) -> None:
        self.check(request)

    def check(self, query: TaskQuery) -> tuple[int, ...]:
        """Checks as the engine does; the prompt ids stand for the task tag's length in characters."""
        get_task(query.task).check_input(query.text_input)
        if query.max_new_tokens is not None and query.max_new_tokens > self.max_new_tokens:
            raise InvalidTaskInput(f"max_new_tokens over {self.max_new_tokens}")
        return tuple(range(len(query.task)))

    async def run(self, request: TaskRequest) -> TaskResult:
        self.validate(request)
        self.requests.append(request)
        if self.hold is not None:
            await self.hold.wait()
        if self.delay_s:  # inference time, simulated: what the tests that set it are about
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return answer(request, self.max_new_tokens)

    async def run_batch(self, requests: Sequence[TaskRequest]) -> list[TaskResult]:
        return [await self.run(request) for request in requests]

    async def stream(self, request: TaskRequest) -> AsyncIterator[str | TaskResult]:
        result = await self.run(request)
        words = result.parsed[request.task].split(" ")
        for index, word in enumerate(words):
            yield word if index == 0 else " " + word
        yield result

    async def close(self) -> None:
        self.closed = True


def describe(image: Image.Image) -> str:
    colour = image.convert("RGB").resize((1, 1)).getpixel((0, 0))
    name = COLOUR_NAMES.get(tuple(colour), "mixed")  # type: ignore[arg-type]
    return f"a {name} image of {image.width} by {image.height} pixels"


def answer(request: TaskRequest, max_new_tokens: int) -> TaskResult:
    task = TASKS[request.task]
    limit = min(request.max_new_tokens or max_new_tokens, max_new_tokens)
    w, h = request.image.size
    words = describe(request.image).split(" ")
    if request.text_input:
        words += ["about", *request.text_input.split(" ")]
    truncated = len(words) > limit
    words = words[:limit]
    parsed: object
    if task.is_text:
        parsed = " ".join(words)
    elif task.parse_type is ParseType.OCR:
        parsed = {"quad_boxes": [[0, 0, w, 0, w, h, 0, h]], "labels": [" ".join(words)]}
    elif task.parse_type is ParseType.POLYGONS:
        parsed = {"polygons": [[[0, 0, w, 0, w, h]]], "labels": [""]}
    elif task.parse_type is ParseType.BBOXES:
        parsed = {"bboxes": [[0, 0, w / 2, h], [w / 2, 0, w, h]], "labels": ["", ""]}
    elif task.parse_type is ParseType.DESCRIPTION_WITH_BBOXES_OR_POLYGONS:
        parsed = {
            "bboxes": [[0, 0, w, h]],
            "bboxes_labels": [request.text_input or ""],
            "polygons": [],
            "polygons_labels": [],
        }
    else:
        parsed = {"bboxes": [[0, 0, w / 2, h], [w / 2, 0, w, h]], "labels": [words[min(1, len(words) - 1)], "half"]}
    return TaskResult(
        task=request.task,
        text=" ".join(words),
        parsed={request.task: parsed},
        token_ids=tuple(range(len(words))),
        prompt_tokens=10,
        completion_tokens=len(words),
        finish_reason="length" if truncated else "stop",
        timings=dict(FakeEngine.TIMINGS),
        batch_size=1,
    )


class FakeResolver:
    """Answers from a table; a name not in it does not resolve. Counts lookups per name."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = {name: [ipaddress.ip_address(a) for a in addresses] for name, addresses in (table or {}).items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        if host not in self.table:
            raise OSError(-2, "Name or service not known")
        return list(self.table[host])


def image_bytes(
    colour: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (64, 48), fmt: str = "PNG"
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def payload(text: str = "<CAPTION>", url: str | None = None, **extra: object) -> dict[str, object]:
    """A request in the spec's shape: one user message, one image part, one text part."""
    url = url or data_url(image_bytes())
    return {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
            }
        ],
        **extra,
    }
