"""Input parsing for edge functions, shared by the examples and by users (``from runtime.functions.helpers import``).

A function's request is the client's to fill: a query parameter may be ``²`` (a digit to ``str.isdigit``, not to
``int``), 5,000 digits (more than ``int()`` takes), ``nan``; an uploaded body may claim 20000x20000 pixels or be
no image at all. These helpers read such input into what ``AI.run`` takes, and answer bad input with a 4xx error
of ours whose message says what to send, never with a 500:

- ``int_param`` / ``box_param``: numbers from the query string, ASCII digits only, bounded in length and range;
- ``uploaded_image``: the body's image bytes with their size as shown, through the binding's own byte, pixel and
  format checks (413, 415, 400), before the function looks at a pixel;
- ``image_url_of``: an uploaded image as a ``data:`` URL, or ``?url=`` for the binding to fetch (SSRF-guarded);
  the URL remembers where it came from, so the binding's errors about the image name ``url`` or ``body`` (what
  the function's client sent), not the path inside the payload the function built;
- ``generation_options``, ``chat``: the rest of an ``AI.run`` payload;
- ``length_warning``: what to tell the client when the answer stopped at its token limit, not at its end.

Raising one of the errors re-exported here is a one-line 4xx: ``raise InvalidRequest("why", param="box")`` is a 400
``invalid_request`` with that message (``PayloadTooLarge`` a 413, ``UnsupportedMediaType`` a 415).
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from runtime.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from runtime.untrusted import quote

__all__ = [
    "ImageSource",
    "InvalidRequest",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "UploadedImage",
    "box_param",
    "chat",
    "data_url",
    "generation_options",
    "image_url_of",
    "int_param",
    "length_warning",
    "uploaded_image",
]

MAX_NUMBER_CHARS = 32  # no pixel coordinate or token count needs more; a longer one is refused unread
_INTEGER = re.compile(r"[0-9]{1,18}")  # ASCII digits only: "²" and "٣" are digits to str.isdigit, not to us
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # no exponent, nan or inf
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")
UPLOAD_MEDIA_TYPE = "application/octet-stream"  # the binding tells formats apart by their bytes anyway


class ImageSource(str):
    """An image URL (a ``str``) with the request parameter it came from; the binding names ``param`` in its
    errors about the image instead of ``messages[0].content[0].image_url.url``."""

    param: str

    def __new__(cls, url: str, param: str) -> ImageSource:
        source = super().__new__(cls, url)
        source.param = param
        return source


@dataclass(frozen=True)
class UploadedImage:
    data: bytes
    media_type: str
    width: int  # as shown: EXIF orientation applied, as the binding applies it
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def url(self) -> ImageSource:
        return ImageSource(data_url(self.data, self.media_type), "body")


def int_param(request: Request, name: str, *, low: int, high: int, default: int | None = None) -> int | None:
    """``?name=N`` as an integer in ``[low, high]``; ``default`` when it is absent; 400 naming it otherwise."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}, not {quote(text)}", param=name)
    return int(text)


def box_param(request: Request, size: tuple[int, int], name: str = "box") -> list[float]:
    """``?box=x1,y1,x2,y2`` in pixels of an image of ``size``: four decimals, x1 < x2 <= width, y1 < y2 <= height."""
    text = request.query_params.get(name, "")
    width, height = size
    parts = text.split(",")
    box: list[float] = []
    if len(parts) == 4 and all(len(p) <= MAX_NUMBER_CHARS and _DECIMAL.fullmatch(p.strip()) for p in parts):
        box = [float(part) for part in parts]
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or not _inside(box, width, height):
        raise InvalidRequest(
            f"{name} must be x1,y1,x2,y2 in pixels with 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height}, "
            f"not {quote(text)}",
            param=name,
        )
    return box


def _inside(box: list[float], width: int, height: int) -> bool:
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


async def uploaded_image(request: Request, env: Any) -> UploadedImage:
    """The POSTed body as an image, checked by the binding (``env.AI``) as it checks every image: over
    ``FLORENCE_MAX_IMAGE_BYTES`` or ``FLORENCE_MAX_IMAGE_PIXELS`` a 413, not an accepted format a 415, damaged a
    400. Only its header is read here; the binding decodes it when the function passes it on."""
    body = await request.body() if request.method == "POST" else b""
    if not body:
        raise InvalidRequest("POST the image bytes as the request body (JPEG, PNG, WebP, GIF or BMP)", param="body")
    width, height = await env.AI.image_size(body)
    return UploadedImage(body, _media_type(request), width, height)


async def image_url_of(request: Request) -> ImageSource:
    """An uploaded image becomes a data: URL; otherwise ?url= is passed on (the binding fetches it safely)."""
    if request.method == "POST":
        body = await request.body()
        if body:
            return ImageSource(data_url(body, _media_type(request)), "body")
    url = request.query_params.get("url")
    if not url:
        raise InvalidRequest("give an image: ?url=https://... or POST the image bytes", param="url")
    return ImageSource(url, "url")


def data_url(data: bytes, media_type: str = UPLOAD_MEDIA_TYPE) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _media_type(request: Request) -> str:
    """The upload's Content-Type when it is a plain media type; anything else is not copied into the data: URL."""
    given = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return given if _MEDIA_TYPE.fullmatch(given) else UPLOAD_MEDIA_TYPE


def generation_options(request: Request, *, max_tokens_limit: int = 1 << 20) -> dict[str, int]:
    """``?max_tokens=N`` as the binding's ``max_tokens`` option (the binding enforces the server's own bound)."""
    max_tokens = int_param(request, "max_tokens", low=1, high=max_tokens_limit)
    return {} if max_tokens is None else {"max_tokens": max_tokens}


def chat(image_url: str, text: str) -> list[dict[str, Any]]:
    """The ``messages`` of a request: one user message with the image and the task text."""
    content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def length_warning(answer: dict[str, Any]) -> dict[str, str]:
    """``{"warning": ...}`` when ``AI.run``'s answer was cut at its token limit (``finish_reason`` "length"), else
    ``{}``: a cut answer may hold fewer lines or boxes than the image has (an OCR line without its region is
    dropped), which without a word reads as the model seeing nothing."""
    choice = answer["choices"][0]
    if choice.get("finish_reason") != "length":
        return {}
    tokens = answer.get("usage", {}).get("completion_tokens")
    return {
        "warning": f"the answer stopped at its token limit ({tokens} tokens) and may be cut short; "
        "ask for more with ?max_tokens=N"
    }
