"""Arbitration of a beam-search divergence: where did transformers' search drop the engine's answer, and how close
was that decision?

The engine's answer is followed through transformers' search, replayed with our numpy search on transformers' own
logits (which reproduces transformers' tokens exactly; the oracle checks it). At each step the engine's prefix is a
running beam; its next candidate (the engine's next token) either stays, or is cut there: a running candidate when
it ranks below the k-th kept candidate that did not just finish, a finishing one (EOS) when it ranks below the
k-th candidate. The margin is the score (sum of log-probabilities) between it and that cut-off. An answer that
survives to the end loses, if at all, in the final choice among finished hypotheses (length-normalised scores), or
because the reference stopped while it was still running.

A divergence is a near tie when that margin is under the tolerance of the logits' rounding, or when an earlier cut of
the reference was (the engine may then have kept other beams, whose children it compared the answer against). The
report names the step, the kind of decision and both margins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.engine.generation_config import GenerationConfig, SearchOptions
from runtime.engine.logits import log_softmax
from runtime.engine.search import BeamSearch, GreedySearch, make_search


@dataclass(frozen=True)
class Arbitration:
    kind: str  # "pruned", "not finished", "final choice", "stopped", "greedy"
    step: int  # generated tokens before the decision
    margin: float  # how far the engine's answer lost by there (score units); inf when no score decides it
    closest_earlier_cut: float  # the closest cut the reference made before that step

    def near_tie(self, tolerance: float) -> bool:
        return min(self.margin, self.closest_earlier_cut) < tolerance

    def describe(self) -> str:
        return (
            f"{self.kind} at step {self.step}: margin {self.margin:.3g}, "
            f"closest earlier cut {self.closest_earlier_cut:.3g}"
        )


def arbitrate(
    config: GenerationConfig, options: SearchOptions, step_logits: Sequence[np.ndarray], engine_tokens: Sequence[int]
) -> Arbitration:
    """Where the reference search (on ``step_logits``: per step, this request's rows first) lost ``engine_tokens``.

    Call it only for a divergence: an engine answer equal to the reference's has no losing decision.
    """
    search = make_search(config, options)
    answer = [config.decoder_start_token_id, *engine_tokens]
    cuts: list[float] = []
    for step, logits in enumerate(step_logits):
        rows = np.array(logits[: search.rows], dtype=np.float32)
        if isinstance(search, GreedySearch):
            scores = search.rules.apply(search.tokens[None, : search.length], rows.copy())[0]
            if step + 1 < len(answer) and int(np.argmax(scores)) != answer[step + 1]:
                margin = float(scores.max() - scores[answer[step + 1]])
                return Arbitration("greedy", step, margin, min(cuts, default=float("inf")))
            cuts.append(_gap(scores, 2))
        else:
            assert isinstance(search, BeamSearch)
            found = _candidate(search, rows, answer)
            if found is not None:
                return Arbitration(found[0], step, found[1], min(cuts, default=float("inf")))
            cuts.append(_cut_gap(search, rows))
        search.advance(rows)
        if search.done:
            break
    tokens, _ = search.result()
    earlier = min(cuts, default=float("inf"))
    if not isinstance(search, BeamSearch):
        return Arbitration("greedy", len(tokens), float("inf"), earlier)
    finished = [
        (float(score), search.finished[i, 1 : int(search.finished_lengths[i])].tolist())
        for i, score in enumerate(search.finished_scores)
        if search.is_finished[i]
    ]
    ours = [score for score, sequence in finished if sequence == list(engine_tokens)]
    if ours:
        return Arbitration("final choice", len(engine_tokens), finished[0][0] - max(ours), earlier)
    return Arbitration("stopped", search.cur_len - 1, float("inf"), earlier)


def _accumulated(search: BeamSearch, rows: np.ndarray) -> np.ndarray:
    log_probs = log_softmax(rows)
    if log_probs.shape[0] != search.k:
        log_probs = np.repeat(log_probs, search.k, axis=0)
    log_probs = search.rules.apply(search.running[:, : search.cur_len], log_probs)
    return log_probs + search.running_scores[:, None]


def _candidate(search: BeamSearch, rows: np.ndarray, answer: list[int]) -> tuple[str, float] | None:
    """("pruned" or "not finished", margin) when this step cuts the engine's answer; None when it survives."""
    length = search.cur_len
    if length >= len(answer):
        return None
    parents = [
        r
        for r in range(search.k)
        if search.running_scores[r] > -1e8 and search.running[r, :length].tolist() == answer[:length]
    ]
    if not parents:
        return None  # not running here: it finished earlier (judged at the end) or was cut before (judged there)
    accumulated = _accumulated(search, rows)
    token = answer[length]
    score = max(float(accumulated[r, token]) for r in parents)
    flat = accumulated.reshape(-1)
    top_index = np.argsort(-flat, kind="stable")[: search.keep]
    if token in search.eos.tolist() or length + 1 >= search.max_length:
        cutoff = float(flat[top_index[search.k - 1]])
        return ("not finished", cutoff - score) if score < cutoff else None
    is_eos = np.isin(top_index % accumulated.shape[1], search.eos)
    running = flat[top_index[~is_eos]][: search.k]
    cutoff = float(running[-1]) if len(running) else float("-inf")
    return ("pruned", cutoff - score) if score < cutoff else None


def _cut_gap(search: BeamSearch, rows: np.ndarray) -> float:
    """The gap at this step's cut: the k-th kept running candidate against the best one left out."""
    flat = _accumulated(search, rows).reshape(-1)
    vocab = rows.shape[1]
    order = np.argsort(-flat, kind="stable")[: search.keep + search.k]
    running = [float(flat[i]) for i in order if (i % vocab) not in search.eos.tolist() and flat[i] > -1e8]
    if len(running) <= search.k:
        return float("inf")
    return running[search.k - 1] - running[search.k]


def _gap(scores: np.ndarray, top: int) -> float:
    best = np.sort(scores[np.isfinite(scores) & (scores > -1e8)])[::-1][:top]
    return float(best[0] - best[1]) if best.size >= 2 else float("inf")
