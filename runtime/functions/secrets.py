"""Secret values known to the process, so that logs and error bodies can be scrubbed of them.

A variable from a ``.env`` file, or from the server's own environment, is a secret when its name contains one of
``SECRET_MARKERS`` (``API_KEY``, ``DB_PASSWORD``, ``GITHUB_TOKEN`` ...): a function can read either. Values shorter
than ``MIN_SECRET_LENGTH`` are not scrubbed: replacing every "1" in a log would hide more than it protects.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping

SECRET_MARKERS: tuple[str, ...] = (
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "PRIVATE",
    "AUTH",
    "COOKIE",
)
MIN_SECRET_LENGTH = 4
MASK = "[redacted]"


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


class SecretRegistry:
    """Thread-safe: functions load on the event loop and in worker threads; logging reads from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, frozenset[str]] = {}
        self._ordered: tuple[str, ...] = ()

    def set(self, owner: str, values: Iterable[str]) -> None:
        with self._lock:
            self._by_owner[owner] = frozenset(v for v in values if len(v) >= MIN_SECRET_LENGTH)
            every = set().union(*self._by_owner.values()) if self._by_owner else set()
            self._ordered = tuple(sorted(every, key=len, reverse=True))  # longest first: no partial leftovers

    def redact(self, text: str) -> str:
        for value in self._ordered:
            if value in text:
                text = text.replace(value, MASK)
        return text


SECRETS = SecretRegistry()


PROCESS_ENVIRONMENT = "process environment"
# The environment holds what the machine put there too (SSH_AUTH_SOCK=/tmp/..., NO_AUTH=true): only values long
# enough to be keys or passwords are scrubbed, so that logs keep their paths and booleans.
MIN_PROCESS_SECRET_LENGTH = 12


def register_process_environment(environ: Mapping[str, str] | None = None) -> None:
    """The server's own secret-named environment variables (os.environ unless given), scrubbed like .env ones."""
    environ = os.environ if environ is None else environ
    values = [v for name, v in environ.items() if is_secret_name(name) and len(v) >= MIN_PROCESS_SECRET_LENGTH]
    SECRETS.set(PROCESS_ENVIRONMENT, values)
