"""Object detection, as JSON boxes or as the image with the boxes drawn.

    POST /detect                 image bytes as the body -> {"objects": [{"label": "car", "box": [x1, y1, x2, y2]}]}
    POST /detect/annotated.png   image bytes as the body -> the same image (PNG) with the boxes and labels drawn
    GET  /detect?url=https://... -> JSON (drawing needs the uploaded bytes)

?task=dense asks for <DENSE_REGION_CAPTION> (descriptions instead of categories), ?task=proposals for
<REGION_PROPOSAL> (boxes without labels). Boxes are in pixels of the image as shown (EXIF orientation applied).
"""

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runtime.errors import InvalidRequest

from .drawing import draw_boxes

TASKS = {"objects": "<OD>", "dense": "<DENSE_REGION_CAPTION>", "proposals": "<REGION_PROPOSAL>"}


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any] | Response:
    task = TASKS.get(request.query_params.get("task", "objects"))
    if task is None:
        raise InvalidRequest(f"task must be one of {', '.join(TASKS)}", param="task")
    annotated = request.url.path.rstrip("/").endswith("/annotated.png")
    if annotated and not (request.method == "POST" and await request.body()):
        raise InvalidRequest("POST the image bytes to /detect/annotated.png", param="body")
    payload = {"messages": chat(await image_url_of(request), task), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)  # noqa: F821 - AI is injected
    found = answer["result"][task]
    labels = found.get("labels") or [""] * len(found["bboxes"])
    objects = [
        {"label": label, "box": [round(v, 1) for v in box]} for label, box in zip(labels, found["bboxes"], strict=True)
    ]
    if annotated:
        return Response(draw_boxes(await request.body(), objects), media_type="image/png")
    return {"task": task, "objects": objects, "usage": answer["usage"]}


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
