"""Client input made safe for messages, logs and error bodies, and request JSON bounded in depth, digits and text."""

from __future__ import annotations

import json

import pytest

from runtime.errors import InvalidRequest
from runtime.untrusted import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_CHARS,
    check_json,
    for_envelope,
    for_log,
    parse_json,
    quote,
)


def test_quote_escapes_and_bounds() -> None:
    assert quote("abc") == "'abc'"
    assert quote("a\nb\x00\ud800\u2028") == "'a\\x0ab\\x00\\ud800\\u2028'"
    long = quote("x" * 1_000_000)
    assert len(long) < 120 and "(1000000 characters)" in long
    assert "digits" in quote(10**5000)  # str() of it raises past Python's digit limit


def test_for_log_keeps_one_record_one_line() -> None:
    text = for_log("field 'x\nERROR forged'\r\x1b[31m")
    assert "\r" not in text and "\x1b" not in text
    assert all(line.startswith("  ") for line in text.split("\n")[1:])  # continuation lines are indented
    assert for_log("plain") == "plain"
    assert len(for_log("x" * 1_000_000)) < 25_000


def test_for_envelope_is_always_utf8_and_bounded() -> None:
    text = for_envelope("bad \ud800 text" + "y" * 5000)
    text.encode("utf-8")  # would raise with the surrogate left in
    assert len(text) <= MAX_MESSAGE_CHARS + 30
    with pytest.raises(UnicodeEncodeError):  # negative control: the raw message cannot be encoded
        "bad \ud800 text".encode()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"a": "\\ud800"}', "a"),
        ('{"a": [1, {"b": "x\\udfffy"}]}', "a[1].b"),
        ('{"k\\ud800": 1}', "k\\ud800"),
        ('"\\udc00"', None),
    ],
)
def test_lone_surrogates_are_refused_with_their_path(body: str, where: str | None) -> None:
    with pytest.raises(InvalidRequest, match="surrogate") as caught:
        parse_json(body.encode())
    assert caught.value.param == where


def test_paired_surrogates_are_text() -> None:
    assert parse_json(b'{"emoji": "\\ud83d\\ude00", "word": "caf\xc3\xa9"}') == {"emoji": "\U0001f600", "word": "café"}


def test_integers_past_the_digit_bound_are_refused() -> None:
    assert parse_json(b'{"n": ' + b"9" * MAX_INT_DIGITS + b"}")["n"] == int("9" * MAX_INT_DIGITS)
    for digits in (MAX_INT_DIGITS + 1, 5000, 100_000):
        with pytest.raises(InvalidRequest, match=f"{digits} digits"):
            parse_json(b'{"ignored": -' + b"1" * digits + b"}")


def test_depth_is_bounded_without_recursion() -> None:
    assert parse_json(("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH).encode())
    deep = {"a": json.loads("[" * 900 + "1" + "]" * 900)}
    with pytest.raises(InvalidRequest, match="nested more than") as caught:
        check_json(deep)
    assert caught.value.param is not None and caught.value.param.startswith("a[0][0]")
    with pytest.raises(InvalidRequest, match="nested"):
        parse_json(b"[" * 100_000 + b"]" * 100_000)  # past the parser's own recursion


@pytest.mark.parametrize("body", [b"{", b"\xff", b"[1,]", b"NaNx"])
def test_not_json_is_invalid_request(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_json(body)


def test_a_million_parts_are_checked_quickly() -> None:
    import time

    value = json.loads(json.dumps({"content": [{}] * 1_000_000, "text": ["a"] * 100_000}))
    started = time.perf_counter()
    check_json(value)
    assert time.perf_counter() - started < 2.0  # ~0.05 s; a statement per node took 4 s
