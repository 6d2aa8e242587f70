"""Small helpers for edge functions that call the ``AI`` binding (``from runtime.functions.helpers import ...``).

They turn a Starlette request into the pieces of an ``AI.run`` payload: the image (an uploaded body becomes a
``data:`` URL, otherwise ``?url=`` is passed on for the binding to fetch through its SSRF guard), the generation
options from the query string, and the one-message chat the binding expects.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request

from runtime.errors import InvalidRequest


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
    """``?max_tokens=N`` as the binding's ``max_tokens`` option (the binding enforces the upper bound)."""
    max_tokens = request.query_params.get("max_tokens")
    if max_tokens is None:
        return {}
    if not max_tokens.isdigit():
        raise InvalidRequest(f"max_tokens must be a positive integer, not {max_tokens!r}", param="max_tokens")
    return {"max_tokens": int(max_tokens)}


def chat(image_url: str, text: str) -> list[dict[str, Any]]:
    """The ``messages`` of a request: one user message with the image and the task text."""
    content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": text}]
    return [{"role": "user", "content": content}]
