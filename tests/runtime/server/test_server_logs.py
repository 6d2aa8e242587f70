"""Log records: data: URLs are cut to their scheme, media type and length, as sent or percent-encoded."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

from runtime.server.logs import RedactingFilter, shorten_data_urls

PAYLOAD = base64.b64encode(bytes(range(256)) * 8).decode()  # 2732 characters


def test_a_data_url_is_logged_as_its_media_type_and_length() -> None:
    line = f'127.0.0.1:5 - "POST /caption?url=data:image/png;base64,{PAYLOAD}&max_tokens=4 HTTP/1.1" 200'
    assert shorten_data_urls(line) == (
        f'127.0.0.1:5 - "POST /caption?url=data:image/png;base64,[{len(PAYLOAD)} chars]&max_tokens=4 HTTP/1.1" 200'
    )


def test_a_percent_encoded_data_url_is_shortened_too() -> None:
    encoded = quote(f"data:image/jpeg;base64,{PAYLOAD}", safe="")
    shortened = shorten_data_urls(f"GET /ocr?url={encoded}")
    assert shortened.startswith("GET /ocr?url=data:image/jpeg;base64,[") and shortened.endswith(" chars]")
    assert len(shortened) < 80


def test_short_data_urls_and_prose_stay_as_they_are() -> None:
    for text in ("a `data:` URL is measured before it is decoded", "data:image/gif;base64,R0lGODlhAQABAAAAACw="):
        assert shorten_data_urls(text) == text


def test_the_access_log_record_is_shortened() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/caption?url=data%3Aimage%2Fpng%3Bbase64%2C{PAYLOAD}", "1.1", 200), None,
    )  # fmt: skip
    RedactingFilter().filter(record)
    shortened = f"data:image/png;base64,[{len(PAYLOAD)} chars]"
    assert record.getMessage() == f'127.0.0.1:5 - "GET /caption?url={shortened} HTTP/1.1" 200'
