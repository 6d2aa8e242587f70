"""Read the text in an image, with the region of each line.

    GET  /ocr?url=https://...[&max_tokens=N]      or      POST /ocr   with the image bytes as the body

-> {"text": "all lines, one per line", "regions": [{"text": "...", "quad": [x1, y1, x2, y2, x3, y3, x4, y4]}]}
Quadrilaterals are in pixels of the image, corners clockwise from the top left.
"""

import base64
from typing import Any

from starlette.requests import Request

from runtime.errors import InvalidRequest

TASK = "<OCR_WITH_REGION>"


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any]:
    payload = {"messages": chat(await image_url_of(request), TASK), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)  # noqa: F821 - AI is injected
    found = answer["result"][TASK]
    regions = [
        {"text": text, "quad": [round(v, 1) for v in quad]}
        for text, quad in zip(found["labels"], found["quad_boxes"], strict=True)
    ]
    return {"text": "\n".join(region["text"] for region in regions), "regions": regions, "usage": answer["usage"]}


async def image_url_of(request: Request) -> str:
    """An uploaded image becomes a data: URL; otherwise ?url= is passed on (the binding fetches it safely)."""
    if request.method == "POST":
        body = await request.body()
        if body:
            media_type = request.headers.get("content-type", "application/octet-stream")
            return f"data:{media_type};base64,{base64.b64encode(body).decode()}"
    url = request.query_params.get("url")
    if not url:
        raise InvalidRequest("give an image: ?url=https://... or POST the image bytes", param="url")
    return url


def generation_options(request: Request) -> dict[str, int]:
    max_tokens = request.query_params.get("max_tokens")
    if max_tokens is None:
        return {}
    if not max_tokens.isdigit():
        raise InvalidRequest(f"max_tokens must be a positive integer, not {max_tokens!r}", param="max_tokens")
    return {"max_tokens": int(max_tokens)}


def chat(image_url: str, text: str) -> list[dict[str, Any]]:
    content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": text}]
    return [{"role": "user", "content": content}]
