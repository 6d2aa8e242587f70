"""JSON Schema validation whose cost the schema bounds, not the payload: a 16 MB body must not cost seconds.

jsonschema checks every item of an array before it notices the array is too long, writes the repr of whole values
into its messages, and checks "format": "uri" with one regular expression that costs about 65 ms a megabyte while
holding the GIL (so even off the event loop it stalls every request). Here:
- an array over its schema's maxItems gets that one error and nothing more is checked in it;
- a ``data:`` URI has its header checked as a URI and its payload by character class (the payload's own decoding
  checks it properly later); any other URI, or a data: header, longer than MAX_URI_CHARS is refused unread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jsonschema import Draft7Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError
from rfc3986_validator import validate_rfc3986

MAX_URI_CHARS = 8192  # what browsers, proxies and CDNs take; image URLs longer than this are not real ones
# RFC 3986 pchar, "/" and "?": everything the path and query of a URI may hold, percent signs checked apart.
_URI_DATA = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError]]


def is_uri(value: object) -> bool:
    """RFC 3986 absolute URI, in time linear in its length; ValueError says why a long one is refused."""
    if not isinstance(value, str):
        return True
    head, comma, payload = value.partition(",")
    is_data = bool(comma) and head[:5].lower() == "data:"
    checked = head + comma if is_data else value  # a data: URI's payload is checked apart, below
    if len(checked) > MAX_URI_CHARS:
        raise ValueError(f"{len(checked)} characters; URLs of more than {MAX_URI_CHARS} are not accepted")
    return bool(validate_rfc3986(checked)) and (not is_data or _is_uri_data(payload))


def _is_uri_data(text: str) -> bool:
    return _URI_DATA.fullmatch(text) is not None and _BAD_PERCENT.search(text) is None


FORMAT_CHECKER = FormatChecker()
for _name, (_check, _raises) in Draft7Validator.FORMAT_CHECKER.checkers.items():
    FORMAT_CHECKER.checks(_name, _raises)(_check)
FORMAT_CHECKER.checks("uri", raises=ValueError)(is_uri)


def _unless_oversized(keyword: Keyword) -> Keyword:
    """An array over its schema's maxItems is invalid whatever else holds: only maxItems is reported for it.

    Without this, a body of a million content parts has every part checked against every branch of the part
    schema: minutes of CPU for one request that is refused anyway.
    """

    def check(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
        if isinstance(instance, list) and len(instance) > schema.get("maxItems", len(instance)):
            return
        yield from keyword(validator, value, instance, schema)

    return check


def _max_items(validator: Any, limit: int, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if isinstance(instance, list) and len(instance) > limit:
        yield ValidationError(f"expected at most {limit} items, got {len(instance)}")


BoundedDraft7Validator = validators.extend(
    Draft7Validator,
    {
        **{name: _unless_oversized(keyword) for name, keyword in Draft7Validator.VALIDATORS.items()},
        "maxItems": _max_items,
    },
)
