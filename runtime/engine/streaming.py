"""Text deltas from a growing list of generated ids.

Each update decodes the whole settled id list and emits what is new at its end. The text is held back where it
may still change: trailing whitespace (the answer is stripped) and a trailing replacement character (a UTF-8
sequence split across tokens). The deltas concatenate to the final answer.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Protocol

log = logging.getLogger(__name__)

_INCOMPLETE = "\ufffd"


class Decodes(Protocol):
    def decode(self, token_ids: Sequence[int]) -> str: ...


class TextDeltas:
    def __init__(self, decoder: Decodes, strip_ids: Collection[int]) -> None:
        self.decoder = decoder
        self.strip_ids = frozenset(strip_ids)
        self.emitted = ""

    def update(self, token_ids: Sequence[int]) -> str:
        """The new text since the last update ("" when nothing is certain yet)."""
        text = self.decoder.decode([i for i in token_ids if i not in self.strip_ids]).lstrip()
        stable = text.rstrip().rstrip(_INCOMPLETE).rstrip()
        if len(stable) <= len(self.emitted) or not stable.startswith(self.emitted):
            return ""
        delta = stable[len(self.emitted) :]
        self.emitted = stable
        return delta

    def finish(self, answer: str) -> str:
        """What remains of the final ``answer`` after the emitted deltas."""
        if not answer.startswith(self.emitted):
            log.warning("streamed text %r is not a prefix of the answer %r", self.emitted, answer)
            return ""
        rest = answer[len(self.emitted) :]
        self.emitted = answer
        return rest
