"""Per-request token search: greedy, and beam search exactly as transformers' ``_beam_search`` does it.

Each search owns the hypotheses of one request. The decoding loop hands it the logits of its rows, and it
answers which of its current rows each next row continues (``parents``) and with which token. A search with
batch size one is the same computation transformers does per batch item, so a request's result does not depend
on which other requests share its decoder batch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from runtime.engine.api import FinishReason
from runtime.engine.generation_config import GenerationConfig, SearchOptions
from runtime.engine.logits import LogitsRules, log_softmax

_NEG = np.float32(-1.0e9)  # transformers' "never pick this" score in beam bookkeeping


class Search(Protocol):
    rows: int  # decoder rows the next step feeds for this request
    done: bool

    def advance(self, logits: np.ndarray) -> np.ndarray:
        """Take float32 logits [rows, vocab]; return, per next row, the index of the current row it continues."""

    @property
    def next_tokens(self) -> np.ndarray:
        """Token ids [rows] the next decoder step feeds."""

    def settled(self) -> list[int]:
        """Generated ids (decoder start excluded) that every possible final result starts with."""

    def result(self) -> tuple[list[int], FinishReason]:
        """Generated ids (decoder start excluded) and why generation ended; valid once ``done``."""


def make_search(config: GenerationConfig, options: SearchOptions) -> Search:
    if options.num_beams > 1:
        return BeamSearch(config, options)
    return GreedySearch(config, options)


class GreedySearch:
    def __init__(self, config: GenerationConfig, options: SearchOptions) -> None:
        self.rules = LogitsRules(config, options.max_length)
        self.max_length = options.max_length
        self.eos = () if options.ignore_eos else config.eos_token_ids
        self.tokens = np.empty(options.max_length, dtype=np.int64)
        self.tokens[0] = config.decoder_start_token_id
        self.length = 1
        self.rows = 1
        self.done = False
        self.finish_reason: FinishReason = "length"

    def advance(self, logits: np.ndarray) -> np.ndarray:
        forced = self.rules.forces_eos_at(self.length)
        scores = self.rules.apply(self.tokens[None, : self.length], logits)
        token = int(np.argmax(scores[0]))
        self.tokens[self.length] = token
        self.length += 1
        if token in self.eos:
            self.done = True
            self.finish_reason = "length" if forced else "stop"
        elif self.length >= self.max_length:
            self.done = True
        return np.zeros(1, dtype=np.int64)

    @property
    def next_tokens(self) -> np.ndarray:
        return self.tokens[self.length - 1 : self.length]

    def settled(self) -> list[int]:
        return self.tokens[1 : self.length].tolist()

    def result(self) -> tuple[list[int], FinishReason]:
        return self.tokens[1 : self.length].tolist(), self.finish_reason


class BeamSearch:
    """transformers' vectorised beam search for one batch item (``num_return_sequences`` 1, no sampling)."""

    def __init__(self, config: GenerationConfig, options: SearchOptions) -> None:
        k = options.num_beams
        self.k = k
        self.rules = LogitsRules(config, options.max_length)
        self.max_length = options.max_length
        self.eos = np.asarray(() if options.ignore_eos else config.eos_token_ids, dtype=np.int64)
        self.early_stopping = config.early_stopping
        self.length_penalty = config.length_penalty
        self.keep = max(2, 1 + len(config.eos_token_ids)) * k  # candidates kept per step
        self.top_k_mask = np.arange(self.keep) < k
        fill = config.pad_token_id
        self.running = np.full((k, options.max_length), fill, dtype=np.int64)
        self.running[:, 0] = config.decoder_start_token_id
        self.running_scores = np.full(k, _NEG, dtype=np.float32)
        self.running_scores[0] = 0.0
        self.finished = np.full((k, options.max_length), fill, dtype=np.int64)
        self.finished_scores = np.full(k, _NEG, dtype=np.float32)
        self.finished_lengths = np.ones(k, dtype=np.int64)
        self.is_finished = np.zeros(k, dtype=bool)
        self.improvable = True
        self.cur_len = 1
        # The first step runs one decoder row: every beam starts from the same decoder start token.
        self.rows = 1
        self.done = False

    def advance(self, logits: np.ndarray) -> np.ndarray:
        k, cur_len = self.k, self.cur_len
        log_probs = log_softmax(logits)
        if log_probs.shape[0] != k:  # the shared first row stands for all k identical beams
            log_probs = np.repeat(log_probs, k, axis=0)
        log_probs = self.rules.apply(self.running[:, :cur_len], log_probs)
        vocab = log_probs.shape[1]
        accumulated = (log_probs + self.running_scores[:, None]).reshape(-1)

        top = _top_k(accumulated, self.keep)
        top_scores = accumulated[top]
        top_beams = top // vocab
        top_sequences = self.running[top_beams]
        top_sequences[:, cur_len] = top % vocab
        if cur_len + 1 >= self.max_length:
            hits = np.ones(self.keep, dtype=bool)
        else:
            hits = np.isin(top_sequences[:, cur_len], self.eos)

        # Running beams for the next step: the best k candidates that did not just finish.
        running_scores = top_scores + hits.astype(np.float32) * _NEG
        chosen = _top_k(running_scores, k)
        self.running = top_sequences[chosen]
        self.running_scores = running_scores[chosen]
        parents = top_beams[chosen]

        self._update_finished(top_sequences, top_scores, hits & self.top_k_mask)
        self.cur_len += 1
        self._update_improvable()
        open_beam = not (self.is_finished.all() and self.early_stopping is True)
        self.done = not (self.improvable and open_beam and not hits.all())
        if self.rows != k:
            self.rows = k
            parents = np.zeros(k, dtype=np.int64)
        return parents

    def _update_finished(self, sequences: np.ndarray, scores: np.ndarray, just_finished: np.ndarray) -> None:
        # cur_len counts the decoder start and not the new token: it is the generated length, the new token included.
        scores = scores / np.float32(self.cur_len**self.length_penalty)
        if self.is_finished.all() and self.early_stopping is True:
            scores = scores + _NEG
        if not self.improvable:
            scores = scores + _NEG
        scores = scores + (~just_finished).astype(np.float32) * _NEG
        merged_scores = np.concatenate((self.finished_scores, scores))
        best = _top_k(merged_scores, self.k)
        self.finished = np.concatenate((self.finished, sequences))[best]
        self.finished_scores = merged_scores[best]
        self.finished_lengths = np.concatenate(
            (self.finished_lengths, np.full(len(scores), self.cur_len + 1, dtype=np.int64))
        )[best]
        self.is_finished = np.concatenate((self.is_finished, just_finished))[best]

    def _update_improvable(self) -> None:
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_length = self.max_length - 1
        else:
            best_length = self.cur_len - 1
        best_running = self.running_scores[0] / np.float32(best_length**self.length_penalty)
        worst_finished = np.where(self.is_finished, self.finished_scores.min(), _NEG)
        self.improvable = self.improvable and bool((best_running > worst_finished).any())

    @property
    def next_tokens(self) -> np.ndarray:
        return self.running[:, self.cur_len - 1]

    def settled(self) -> list[int]:
        if self.done:
            return self.result()[0]
        # The final best is a finished hypothesis or extends a running one: their common prefix is certain.
        candidates = np.concatenate((self.running[:, : self.cur_len], self.finished[self.is_finished, : self.cur_len]))
        shortest = min(self.cur_len, int(self.finished_lengths[self.is_finished].min(initial=self.cur_len)))
        agree = (candidates[:, 1:shortest] == candidates[:1, 1:shortest]).all(axis=0)
        settled = shortest - 1 if agree.all() else int(np.argmin(agree))
        return candidates[0, 1 : 1 + settled].tolist()

    def result(self) -> tuple[list[int], FinishReason]:
        length = int(self.finished_lengths[0])
        reason: FinishReason = "length" if length >= self.max_length else "stop"
        return self.finished[0, 1:length].tolist(), reason


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties go to the lower index."""
    candidates = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
    return candidates[np.lexsort((candidates, -scores[candidates]))]
