"""Logging for the server and the CLI: request ids on every line, secrets scrubbed from every record, and from
whatever functions print to stdout or stderr; control characters escaped, so a record is never split into lines
that pass for records of their own (a request may name a field ``"x\nERROR forged"``)."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import unquote

from runtime.functions.secrets import SECRETS
from runtime.server.request_id import current_request_id
from runtime.untrusted import for_log

UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# A data: URL, as sent or percent-encoded in a query string (?url=data%3Aimage%2Fpng%3Bbase64%2C...): its bytes
# say nothing to a reader, and an image's are a megabyte of one log line.
_DATA_URL = re.compile(r"data(?::|%3[Aa])([A-Za-z0-9.+/;=%-]{0,200}?)(?:,|%2[Cc])([A-Za-z0-9+/=%._~-]{65,})")


def shorten_data_urls(text: str) -> str:
    """Each data: URL longer than a line's worth cut to its scheme, media type and length (``data:image/png;base64,
    [38120 chars]``), so the access log and messages that quote a URL stay readable."""
    return _DATA_URL.sub(lambda m: f"data:{unquote(m.group(1))},[{len(m.group(2))} chars]", text)


class RedactingFilter(logging.Filter):
    """Formats each record's message and traceback here, so that secrets can be removed before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
            record.exc_text = None
        record.msg = for_log(shorten_data_urls(SECRETS.redact(message)))
        record.args = None
        return True


class RedactingStream:
    """A text stream that writes through to ``stream`` with secrets scrubbed (each write on its own)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(SECRETS.redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, encoding, isatty ...
        return getattr(self.stream, name)


class CurrentStderrHandler(logging.StreamHandler):
    """Writes each record to whatever ``sys.stderr`` is when the record is emitted, not to the stream that was
    there when logging was configured: a stream swapped out later (and perhaps closed, as a test harness closes its
    captures) never receives a record again."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr


def configure_logging(level: str) -> Callable[[], None]:
    """Routes records (and what functions print) through the redaction; returns the undo, for a caller that
    configures logging inside a longer-lived process (a test run) and must leave it as it found it."""
    streams = {name: getattr(sys, name) for name in ("stdout", "stderr")}
    root = logging.getLogger()
    root_level = root.level
    uvicorn = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate) for name in UVICORN}
    wrapped: dict[str, RedactingStream] = {}
    for name, stream in streams.items():
        if not isinstance(stream, RedactingStream):
            wrapped[name] = RedactingStream(stream)
            setattr(sys, name, wrapped[name])
    root.setLevel(level.upper())
    added: logging.Handler | None = None
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        added = CurrentStderrHandler()
        added.setFormatter(logging.Formatter(FORMAT))
        added.addFilter(RedactingFilter())
        root.addHandler(added)
    for name in UVICORN:
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    def undo() -> None:
        for name, stream in wrapped.items():
            if getattr(sys, name) is stream:  # not if someone replaced it since
                setattr(sys, name, streams[name])
        if added is not None:
            root.removeHandler(added)
        root.setLevel(root_level)
        for name, (handlers, propagate) in uvicorn.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate

    return undo
