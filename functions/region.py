"""Ask about a region of an image given in pixels.

    POST /region?box=x1,y1,x2,y2[&task=description|category|segmentation][&max_tokens=N]   image bytes as the body

-> {"task": "<REGION_TO_DESCRIPTION>", "box": [...], "answer": "..."} (segmentation answers with polygons:
{"polygons": [[[x, y, ...]]], "labels": [...]}). The box is turned into Florence-2's location tokens (0..999 across
the image), which is why the function needs the image itself rather than a URL.
"""

import base64
import io
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.requests import Request

from runtime.errors import InvalidRequest, UnsupportedMediaType
from runtime.florence2 import boxes_to_loc_tokens
from runtime.functions.helpers import chat, generation_options

TASKS = {
    "description": "<REGION_TO_DESCRIPTION>",
    "category": "<REGION_TO_CATEGORY>",
    "segmentation": "<REGION_TO_SEGMENTATION>",
}
EXIF_ORIENTATION = 0x0112


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any]:
    task = TASKS.get(request.query_params.get("task", "description"))
    if task is None:
        raise InvalidRequest(f"task must be one of {', '.join(TASKS)}", param="task")
    body = await request.body() if request.method == "POST" else b""
    if not body:
        raise InvalidRequest("POST the image bytes, with ?box=x1,y1,x2,y2 in pixels", param="body")
    size = shown_size(body)
    box = parse_box(request.query_params.get("box", ""), size)
    media_type = request.headers.get("content-type", "application/octet-stream")
    image_url = f"data:{media_type};base64,{base64.b64encode(body).decode()}"
    payload = {"messages": chat(image_url, task + boxes_to_loc_tokens(box, size)), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)  # noqa: F821 - AI is injected
    return {"task": task, "box": box, "answer": answer["result"][task], "usage": answer["usage"]}


def shown_size(image_bytes: bytes) -> tuple[int, int]:
    """Width and height as shown: EXIF orientations 5-8 swap them (the binding applies the orientation too)."""
    try:
        with Image.open(io.BytesIO(image_bytes)) as image:  # reads the header only
            width, height = image.size
            if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
    except UnidentifiedImageError:
        raise UnsupportedMediaType("the body is not an image; POST JPEG, PNG, WebP, GIF or BMP bytes") from None
    return width, height


def parse_box(text: str, size: tuple[int, int]) -> list[float]:
    try:
        box = [float(part) for part in text.split(",")]
    except ValueError:
        box = []
    width, height = size
    if len(box) != 4 or not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
        raise InvalidRequest(
            f"box must be x1,y1,x2,y2 in pixels with x1 < x2 <= {width} and y1 < y2 <= {height}, not {text!r}",
            param="box",
        )
    return box
