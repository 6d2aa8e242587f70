"""transformers as the oracle for the engine tests: ``generate`` on the tiny checkpoint, and decision margins.

The tiny random model (init std 0.5) amplifies float32 rounding: torch's own fp32 vision tower is ~1e-3 away
from its float64 result, and the encoder turns that into logit differences of 0.1 and more. Token parity would
then test rounding luck, not the engine. So the oracle's vision tower output is replaced by the exported vision
graph's output for the same pixels (that graph's own parity with torch is checked separately): everything after
it (placeholder scatter, padding, encoder, decoder, cache, logits processors, search) is transformers' own.

Even then, fp32 logits of this model differ by up to ~1e-3 between torch and ONNX Runtime, so a reference
decision closer than ``TIE_TOLERANCE`` may go either way. The reference search is replayed with our numpy
search on transformers' own logits (which must reproduce transformers' tokens exactly) to measure, per step,
how close its decisions were.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from runtime.engine.generation_config import GenerationConfig, SearchOptions
from runtime.engine.logits import log_softmax
from runtime.engine.search import BeamSearch, GreedySearch, make_search
from runtime.engine.sessions import VISION_ENCODER, GraphRunner

# Reference decisions closer than this (log-probability / logit units) are fp32 ties for this model: teacher-forced
# logits of the exported graphs differ from torch's by up to ~1.5e-3 here, so a difference of two logits by ~3e-3.
TIE_TOLERANCE = 3e-3


@dataclass(frozen=True)
class Case:
    image: Image.Image
    task: str
    text_input: str | None = None

    @property
    def prompt(self) -> str:
        return self.task + (self.text_input or "")


@dataclass(frozen=True)
class Reference:
    tokens: list[int]  # generated ids, decoder start excluded, through the first EOS
    text: str  # transformers' batch_decode(skip_special_tokens=False) of the whole sequence
    margins: list[float]  # per step: the closest decision the reference search made there
    num_beams: int
    logits: list[np.ndarray] = field(default_factory=list)  # greedy only: raw logits [vocab] per step

    def closest_decision(self, position: int) -> float:
        """The closest reference decision that can explain a difference at ``position``: greedy tokens only
        depend on the steps up to there; a beam search's later steps can still reorder earlier tokens."""
        margins = self.margins if self.num_beams > 1 else self.margins[: position + 1]
        return min(margins, default=float("inf"))


class Oracle:
    def __init__(self, checkpoint: Path, vision: GraphRunner, generation: dict[str, Any] | None = None) -> None:
        """``generation``: settings to generate with instead of the checkpoint's generation_config.json."""
        from transformers import AutoProcessor, Florence2ForConditionalGeneration
        from transformers import GenerationConfig as HFGenerationConfig

        self.model = Florence2ForConditionalGeneration.from_pretrained(checkpoint).eval()
        self.processor = AutoProcessor.from_pretrained(checkpoint)
        self.vision = vision
        self.config = GenerationConfig.from_model_dir(checkpoint)
        if generation is not None:
            self.model.generation_config = HFGenerationConfig(**generation)
            self.config = GenerationConfig(
                decoder_start_token_id=generation["decoder_start_token_id"],
                eos_token_ids=(generation["eos_token_id"],),
                pad_token_id=generation["pad_token_id"],
                forced_bos_token_id=generation.get("forced_bos_token_id"),
                forced_eos_token_ids=(generation["forced_eos_token_id"],),
                no_repeat_ngram_size=generation.get("no_repeat_ngram_size", 0),
                num_beams=generation.get("num_beams", 1),
                early_stopping=generation.get("early_stopping", False),
            )

    def inputs(self, cases: Sequence[Case]) -> Any:
        return self.processor(
            images=[c.image for c in cases], text=[c.prompt for c in cases], padding=True, return_tensors="pt"
        )

    def generate(self, cases: Sequence[Case], *, num_beams: int, max_new_tokens: int) -> list[Reference]:
        inputs = self.inputs(cases)
        (features,) = self.vision.run(VISION_ENCODER, {"pixel_values": inputs["pixel_values"].numpy()})
        with self._vision_output(features), torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
        sequences = out.sequences.tolist()
        logits = [step.float().numpy() for step in out.logits]
        options = SearchOptions(num_beams=num_beams, max_length=max_new_tokens + 1)
        references = []
        for item, sequence in enumerate(sequences):
            tokens = _through_eos(sequence[1:], self.config.eos_token_ids)
            replayed, margins = replay(self.config, options, [step[item * num_beams :] for step in logits])
            assert replayed == tokens, f"numpy search on transformers' logits: {replayed} != {tokens}"
            text = self.processor.batch_decode([sequence[: len(tokens) + 1]], skip_special_tokens=False)[0]
            step_logits = [step[item] for step in logits[: len(tokens)]] if num_beams == 1 else []
            references.append(Reference(tokens, text, margins, num_beams, step_logits))
        return references

    def post_process(self, text: str, task: str, image_size: tuple[int, int]) -> dict[str, Any]:
        return self.processor.post_process_generation(text, task=task, image_size=image_size)

    @contextmanager
    def _vision_output(self, features: np.ndarray) -> Any:
        inner = self.model.model
        original = inner.get_image_features
        inner.get_image_features = lambda pixel_values, **kwargs: torch.from_numpy(features)
        try:
            yield
        finally:
            inner.get_image_features = original


def replay(
    config: GenerationConfig, options: SearchOptions, step_logits: Sequence[np.ndarray]
) -> tuple[list[int], list[float]]:
    """Run our search on given per-step logits (rows of one request first); return its tokens and margins."""
    search = make_search(config, options)
    margins = []
    for logits in step_logits:
        rows = np.array(logits[: search.rows], dtype=np.float32)
        margins.append(decision_margin(search, rows))
        search.advance(rows)
        if search.done:
            break
    tokens, _ = search.result()
    return tokens, margins


def decision_margin(search: Any, logits: np.ndarray) -> float:
    """How close the search's next decision is: the smallest gap between candidates it ranks against each other."""
    if isinstance(search, GreedySearch):
        scores = search.rules.apply(search.tokens[None, : search.length], logits.copy())[0]
        return _smallest_gap(scores, 2)
    assert isinstance(search, BeamSearch)
    log_probs = log_softmax(logits)
    if log_probs.shape[0] != search.k:
        log_probs = np.repeat(log_probs, search.k, axis=0)
    log_probs = search.rules.apply(search.running[:, : search.cur_len], log_probs)
    accumulated = (log_probs + search.running_scores[:, None]).reshape(-1)
    gaps = [_smallest_gap(accumulated, search.keep + 1)]
    finished = search.finished_scores[search.is_finished]
    if finished.size >= 2:
        gaps.append(_smallest_gap(finished, finished.size))
    return min(gaps)


def _smallest_gap(scores: np.ndarray, top: int) -> float:
    """Smallest difference between neighbours among the ``top`` best real scores (not -inf, not -1e9 fillers)."""
    best = np.sort(scores[np.isfinite(scores) & (scores > -1e8)])[::-1][:top]
    return float(np.min(best[:-1] - best[1:])) if best.size >= 2 else float("inf")


def _through_eos(tokens: list[int], eos: Sequence[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos:
            return tokens[: position + 1]
    return tokens


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    for position, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b))


def mismatch(reference: Reference, got: Sequence[int], label: str) -> tuple[str | None, str | None]:
    """(failure, accepted tie): token-exact, except where a reference decision was closer than TIE_TOLERANCE."""
    position = first_difference(reference.tokens, got)
    if position is None:
        return None, None
    closest = reference.closest_decision(position)
    ours = got[position] if position < len(got) else "(ended)"
    theirs = reference.tokens[position] if position < len(reference.tokens) else "(ended)"
    message = (
        f"{label}: tokens differ at position {position} (transformers {theirs}, engine {ours}); closest "
        f"reference decision {closest:.3g} (tie tolerance {TIE_TOLERANCE})\n  reference {reference.tokens}\n"
        f"  engine    {list(got)}"
    )
    return (None, message) if closest < TIE_TOLERANCE else (message, None)


def parity_failures(
    references: Sequence[Reference], results: Sequence[Sequence[int]], labels: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Failures and accepted near ties over a set of cases; accepted ties are printed with their gap."""
    failures, ties = [], []
    for reference, got, label in zip(references, results, labels, strict=True):
        failure, tie = mismatch(reference, got, label)
        if failure:
            failures.append(failure)
        if tie:
            print(f"accepted near tie: {tie}")
            ties.append(tie)
    return failures, ties
