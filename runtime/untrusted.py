"""What a client sends, made safe before it reaches an error message, a log line or a metric.

Every string and number of a request is the client's to choose: a megabyte of it, control characters that start
a forged log line, a lone UTF-16 surrogate that no UTF-8 encoder accepts, an integer of 5,000 digits that ``int()``
refuses, JSON nested deep enough to exhaust the recursion of whatever walks it. Here, once:

- ``parse_json`` reads a body: integers of more than ``MAX_INT_DIGITS`` digits, nesting deeper than
  ``MAX_JSON_DEPTH`` and lone surrogates anywhere (keys included) are a 400 naming where, before any other code
  sees the value;
- ``quote`` is how a message cites client input: escaped and cut to a bounded length;
- ``for_log`` escapes control characters (a line break included) so that one record is one line, and bounds it;
- ``for_envelope`` is the last guard of every error body: surrogates escaped, length bounded.

Metric labels never hold client input at all: they come from closed sets (runtime.server.http_metrics).
"""

from __future__ import annotations

import json
import re
from typing import Any

from runtime.errors import InvalidRequest

MAX_QUOTE_CHARS = 80
MAX_MESSAGE_CHARS = 1000
MAX_PARAM_CHARS = 200
MAX_LOG_CHARS = 20_000  # a long traceback fits; a record quoting a megabyte of input does not
# Far beyond any real request (the schema's own depth is 6) and far below the interpreter's recursion limit.
MAX_JSON_DEPTH = 64
# Integers of a request are token counts and beam widths; 100 digits leaves room for any client's sloppy bound.
MAX_INT_DIGITS = 100

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and lone surrogates.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character and lone surrogate written as a Python escape."""
    return _UNSAFE.sub(_escape, text)


def cut(text: str, limit: int) -> str:
    """``text``, or its start and how long it was: a bounded echo of an unbounded value."""
    if len(text) <= limit:
        return text
    return f"{text[: max(0, limit - 3)]}... ({len(text)} characters)"


def quote(value: object, limit: int = MAX_QUOTE_CHARS) -> str:
    """How a message cites a value the client chose: quoted, escaped, at most about ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, int) else _int_text(value)
    return "'" + escape(cut(text, limit)) + "'"


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # past sys.get_int_max_str_digits(): str() itself refuses
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"


def for_log(text: str) -> str:
    """One log record, one line: control characters (line breaks included) and surrogates escaped, the whole cut to
    ``MAX_LOG_CHARS``.

    A traceback keeps its shape: each of its line breaks becomes a line break followed by an indent, so no line of
    it can pass for a record of its own.
    """
    return "\n  ".join(escape(line) for line in cut(text, MAX_LOG_CHARS).split("\n"))


def for_envelope(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message or param that an error body can always carry: encodable as UTF-8, bounded in length."""
    return cut(_SURROGATE.sub(_escape, text), limit)


def has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise InvalidRequest(
            f"the request body holds an integer of {digits} digits; integers of more than {MAX_INT_DIGITS} "
            "digits are not accepted"
        )
    return int(text)


def parse_json(body: bytes | str) -> Any:
    """A request body read as JSON, checked by ``check_json``; every failure is a 400 ``invalid_request``."""
    try:
        value = json.loads(body, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(
            f"the request body is JSON nested too deeply to read; at most {MAX_JSON_DEPTH} levels are accepted"
        ) from None
    except ValueError as exc:  # what json raises past its own bounds (the int hook above catches the known one)
        raise InvalidRequest(f"the request body is not JSON we can read: {cut(str(exc), 200)}") from None
    check_json(value)
    return value


def check_json(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse nesting deeper than ``max_depth`` and lone surrogates in any string or key (400, naming where).

    Level by level, in time linear in the value's size and in comprehensions rather than a statement per node (a
    million empty content parts take some 0.1 s, off the event loop but holding the interpreter): nothing here
    recurses, whatever the depth, and a node's path is only spelled out for an error.
    """
    if isinstance(value, str):
        if has_surrogate(value):
            raise _surrogate_error(())
        return
    level: list[tuple[Any, _Trail]] = [(value, None)] if value and isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            where = json_path(_unwind(level[0][1]))
            raise InvalidRequest(
                f"the request body is JSON nested more than {max_depth} levels deep (at {cut(where, 120)}); flatten it",
                param=where or None,
            )
        below: list[tuple[Any, _Trail]] = []
        for node, trail in level:
            is_dict = isinstance(node, dict)
            if is_dict and not all(map(_ascii_key, node)):
                for key in node:
                    if isinstance(key, str) and has_surrogate(key):
                        raise _surrogate_error(_unwind((trail, key)))
            # The types present, at C speed: most nodes hold no string, or no container, and skip that pass.
            kinds = set(map(type, _values(node)))
            if any(issubclass(kind, str) for kind in kinds):
                for key, item in node.items() if is_dict else enumerate(node):
                    if isinstance(item, str) and has_surrogate(item):
                        raise _surrogate_error(_unwind((trail, key)))
            if any(issubclass(kind, (dict, list)) for kind in kinds) and any(_values(node)):
                pairs = node.items() if is_dict else enumerate(node)
                below.extend([(item, (trail, key)) for key, item in pairs if item and isinstance(item, (dict, list))])
        level = below


def _ascii_key(key: object) -> bool:
    return not isinstance(key, str) or key.isascii()


def _values(node: dict[str, Any] | list[Any]) -> Any:
    return node.values() if isinstance(node, dict) else node


_Trail = tuple[Any, str | int] | None  # (the parent's trail, this node's key or index): a path, built lazily


def _unwind(trail: _Trail) -> tuple[str | int, ...]:
    path: list[str | int] = []
    while trail is not None:
        trail, key = trail
        path.append(key)
    return tuple(reversed(path))


def _surrogate_error(path: tuple[str | int, ...]) -> InvalidRequest:
    where = json_path(path)
    return InvalidRequest(
        f"{where or 'the request body'} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), "
        "which is not text; send valid Unicode",
        param=where or None,
    )


def json_path(path: tuple[str | int, ...]) -> str:
    """``messages[0].content[1].text`` for a path of keys and indices, each key escaped and bounded."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = escape(cut(part, 40))
            text += f".{name}" if text else name
    return text
