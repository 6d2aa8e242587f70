"""Logging for the server and the CLI: request ids on every line, secrets scrubbed from every record."""

from __future__ import annotations

import logging
import traceback

from runtime.functions.secrets import SECRETS
from runtime.server.request_id import current_request_id

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
        record.msg = SECRETS.redact(message)
        record.args = None
        return True


def configure_logging(level: str) -> None:
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
