from __future__ import annotations

import base64

import pytest
from fakes import image_bytes

from runtime.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from runtime.media.data_url import decode_data_url


def test_base64_round_trip() -> None:
    data = image_bytes()
    assert decode_data_url("data:image/png;base64," + base64.b64encode(data).decode(), 1 << 20) == data


def test_whitespace_and_percent_encoding_in_base64_are_tolerated() -> None:
    data = image_bytes()
    encoded = base64.b64encode(data).decode()
    wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)).replace("+", "%2B")
    assert decode_data_url("data:image/png;base64," + wrapped, 1 << 20) == data


def test_untyped_data_url_is_accepted() -> None:
    assert decode_data_url("data:;base64," + base64.b64encode(b"abc").decode(), 100) == b"abc"


def test_bad_base64() -> None:
    with pytest.raises(InvalidImage, match="base64"):
        decode_data_url("data:image/png;base64,@@@@", 100)


def test_no_comma() -> None:
    with pytest.raises(InvalidImage, match="comma"):
        decode_data_url("data:image/png;base64", 100)


def test_other_media_types_are_refused() -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        decode_data_url("data:text/html;base64,PGI+", 100)
    assert caught.value.status == 415


def test_size_is_capped_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        decode_data_url("data:image/png;base64," + "A" * 4000, 2000)
    assert caught.value.status == 413 and "FLORENCE_MAX_IMAGE_BYTES" in caught.value.message
