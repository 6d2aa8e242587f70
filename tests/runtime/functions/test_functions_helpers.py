"""Input parsing for functions: numbers and boxes from the query string, uploaded images through the binding."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from runtime.errors import InvalidRequest, PayloadTooLarge
from runtime.functions.helpers import box_param, generation_options, image_url_of, int_param, uploaded_image


def _request(query: bytes = b"", method: str = "GET", body: bytes = b"", content_type: bytes = b"") -> Request:
    headers = [(b"content-type", content_type)] if content_type else []
    scope = {"type": "http", "method": method, "path": "/f", "headers": headers, "query_string": query}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


@pytest.mark.parametrize("text", [b"%C2%B2", b"9" * 5000, b"-1", b"0", b"2.5", b"", b"1e3", b"%D9%A3", b" 7"])
def test_int_param_refuses_what_is_not_an_ascii_integer_in_range(text: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        int_param(_request(b"n=" + text), "n", low=1, high=100)
    assert caught.value.param == "n"
    assert len(caught.value.message) < 200


def test_int_param_reads_integers_in_range() -> None:
    assert int_param(_request(b"n=42"), "n", low=1, high=100) == 42
    assert int_param(_request(), "n", low=1, high=100, default=7) == 7
    assert generation_options(_request(b"max_tokens=12")) == {"max_tokens": 12}
    assert generation_options(_request()) == {}


@pytest.mark.parametrize(
    "text", [b"1,2,3", b"nan,1,2,3", b"0,0,inf,3", b"9" * 5000 + b",1,2,3", b"5,1,2,3", b"1e1,1,2,3", b"0,0,65,10"]
)
def test_box_param_refuses_what_is_not_a_box_inside_the_image(text: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        box_param(_request(b"box=" + text), (64, 48))
    assert caught.value.param == "box"
    assert len(caught.value.message) < 300


def test_box_param_reads_a_box() -> None:
    assert box_param(_request(b"box=1,2.5,64,48"), (64, 48)) == [1.0, 2.5, 64.0, 48.0]


class _Env:
    def __init__(self, size: tuple[int, int] | Exception) -> None:
        self.AI = self
        self._size = size
        self.seen: list[bytes] = []

    async def image_size(self, data: bytes) -> tuple[int, int]:
        self.seen.append(data)
        if isinstance(self._size, Exception):
            raise self._size
        return self._size


def test_uploaded_image_goes_through_the_binding() -> None:
    env = _Env((30, 20))
    request = _request(method="POST", body=b"bytes", content_type=b"image/png; x=1")
    image = asyncio.run(uploaded_image(request, env))
    assert env.seen == [b"bytes"] and image.size == (30, 20)
    assert image.url == "data:image/png;base64,Ynl0ZXM="
    with pytest.raises(PayloadTooLarge):
        asyncio.run(uploaded_image(_request(method="POST", body=b"big"), _Env(PayloadTooLarge("too many pixels"))))
    with pytest.raises(InvalidRequest, match="POST the image"):
        asyncio.run(uploaded_image(_request(), env))


def test_an_odd_content_type_is_not_copied_into_the_data_url() -> None:
    request = _request(method="POST", body=b"x", content_type=b"image/png;base64,AAAA")
    assert asyncio.run(uploaded_image(request, _Env((1, 1)))).url.startswith("data:image/png;base64,eA")
    request = _request(method="POST", body=b"x", content_type=b"text/html,<script>")
    assert asyncio.run(uploaded_image(request, _Env((1, 1)))).url.startswith("data:application/octet-stream;")


async def test_image_url_of_remembers_which_parameter_gave_the_image() -> None:
    from_query = await image_url_of(_request(b"url=https://example.com/a.png"))
    assert from_query == "https://example.com/a.png" and from_query.param == "url"
    uploaded = await image_url_of(_request(method="POST", body=b"\x89PNG", content_type=b"image/png"))
    assert uploaded == "data:image/png;base64,iVBORw==" and uploaded.param == "body"
