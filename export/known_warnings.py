"""transformers' warnings that every export prints and that say nothing about it, filtered out one by one.

An export loads the checkpoint's processor and runs greedy ``generate`` to validate; transformers then warns about
two things that are right for this use, and a reader cannot tell them from a real problem:

- "Using a slow image processor as `use_fast` is unset ...": the export copies the processor's configuration and
  validates against the slow processor on purpose: it is the one the runtime reproduces bit for bit.
- "The following generation flags are not valid and may be ignored: ['early_stopping']. ...": the checkpoints set
  ``early_stopping`` for their beam search; validation decodes greedily, where it does not apply. Any other flag in
  that list is still shown.

Each is matched on its own message's start, so every other warning of transformers passes.
"""

from __future__ import annotations

import logging

KNOWN_HARMLESS: tuple[str, ...] = (
    "Using a slow image processor as `use_fast` is unset",
    "The following generation flags are not valid and may be ignored: ['early_stopping'].",
)


class KnownWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(known) for known in KNOWN_HARMLESS)


def silence_known_warnings() -> None:
    """Drop KNOWN_HARMLESS from transformers' log handler (where every transformers logger writes)."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger("transformers")  # sets up the library's handler if nothing did yet
    for handler in logging.getLogger("transformers").handlers:
        if not any(isinstance(f, KnownWarnings) for f in handler.filters):
            handler.addFilter(KnownWarnings())
