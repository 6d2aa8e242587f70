"""Caption an image.

    GET  /caption?url=https://example.com/photo.jpg[&detail=1|2][&max_tokens=N]
    POST /caption[?detail=1|2]   with the image bytes as the body (Content-Type: image/jpeg, image/png ...)

-> {"caption": "...", "task": "<CAPTION>", "usage": {...}}. detail=1 asks for <DETAILED_CAPTION>, 2 for
<MORE_DETAILED_CAPTION>. The model id comes from env.MODEL (functions/.env), defaulting to the platform's name.
"""

import base64
from typing import Any

from starlette.requests import Request

from runtime.errors import InvalidRequest

DETAIL_TASKS = {"0": "<CAPTION>", "1": "<DETAILED_CAPTION>", "2": "<MORE_DETAILED_CAPTION>"}


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any]:
    task = DETAIL_TASKS.get(request.query_params.get("detail", "0"))
    if task is None:
        raise InvalidRequest("detail must be 0, 1 or 2", param="detail")
    payload = {"messages": chat(await image_url_of(request), task), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)  # noqa: F821 - AI is injected
    return {"caption": answer["choices"][0]["message"]["content"], "task": task, "usage": answer["usage"]}


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
