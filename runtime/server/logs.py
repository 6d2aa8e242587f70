"""Logging for the server and the CLI: request ids on every line, secrets scrubbed from every record, and from
whatever functions print to stdout or stderr; control characters escaped, so a record is never split into lines
that pass for records of their own (a request may name a field ``"x\nERROR forged"``)."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, TextIO

from runtime.functions.secrets import SECRETS
from runtime.server.request_id import current_request_id
from runtime.untrusted import for_log

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


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
        record.msg = for_log(SECRETS.redact(message))
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


def configure_logging(level: str) -> None:
    for name in ("stdout", "stderr"):
        if not isinstance(getattr(sys, name), RedactingStream):
            setattr(sys, name, RedactingStream(getattr(sys, name)))
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
