"""Score rules applied before each token choice, as transformers' logits processors do (same order, same math).

Rows are hypotheses of one request, so they share the current length. Scores are float32 like transformers'.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from runtime.engine.generation_config import GenerationConfig

NEG_INF = np.float32(-np.inf)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LogitsRules:
    """No-repeat n-grams, then forced BOS at the first step, then forced EOS at the last one."""

    def __init__(self, config: GenerationConfig, max_length: int) -> None:
        self.ngram = config.no_repeat_ngram_size
        self.forced_bos = config.forced_bos_token_id
        self.forced_eos = np.asarray(config.forced_eos_token_ids, dtype=np.int64)
        self.max_length = max_length

    def forces_eos_at(self, cur_len: int) -> bool:
        """Whether the token chosen when ``cur_len`` tokens exist is forced to EOS (the length limit is hit)."""
        return self.forced_eos.size > 0 and cur_len == self.max_length - 1

    def apply(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``sequences`` [rows, cur_len] (decoder start included), ``scores`` [rows, vocab]; modified in place."""
        cur_len = sequences.shape[1]
        if self.ngram > 0 and cur_len + 1 >= self.ngram:
            self._ban_repeated_ngrams(sequences, scores)
        if self.forced_bos is not None and cur_len == 1:
            scores[:] = NEG_INF
            scores[:, self.forced_bos] = 0
        if self.forces_eos_at(cur_len):
            scores[:] = NEG_INF
            scores[:, self.forced_eos] = 0
        return scores

    def _ban_repeated_ngrams(self, sequences: np.ndarray, scores: np.ndarray) -> None:
        # Every earlier n-gram whose first n-1 tokens equal the last n-1 tokens bans its final token.
        n = self.ngram
        if sequences.shape[1] < n:
            return
        windows = sliding_window_view(sequences, n, axis=1)  # [rows, windows, n], a view
        prefix = sequences[:, sequences.shape[1] - n + 1 :]
        rows, positions = np.nonzero((windows[:, :, :-1] == prefix[:, None, :]).all(axis=-1))
        scores[rows, windows[rows, positions, -1]] = NEG_INF
