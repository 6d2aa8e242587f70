"""The decoding loop and the searches on a fake decoder whose logits depend only on each row's history.

Running a search "without cache" (logits recomputed from the search's own hypotheses) is the truth; the batched
loop, which keeps per-row state and reorders it by index, must give the same tokens for every request.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from runtime.engine.generation import generate
from runtime.engine.generation_config import GenerationConfig, SearchOptions
from runtime.engine.logits import LogitsRules
from runtime.engine.search import BeamSearch, GreedySearch, Search, make_search

VOCAB = 40
START, BOS, EOS, PAD = 2, 0, 2, 1
CONFIG = GenerationConfig(
    decoder_start_token_id=START,
    eos_token_ids=(EOS,),
    pad_token_id=PAD,
    forced_bos_token_id=BOS,
    forced_eos_token_ids=(EOS,),
    no_repeat_ngram_size=3,
    num_beams=3,
    early_stopping=True,
    max_length=1025,
)
LogitsFn = Callable[[int, tuple[int, ...]], np.ndarray]


def hashed_logits(eos_boost: float) -> LogitsFn:
    """Pseudo-random logits from (request, history); EOS gets ``eos_boost`` so some hypotheses end early."""

    def logits(request: int, history: tuple[int, ...]) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(repr((request, history)).encode()).digest()[:8], "little")
        values = np.random.default_rng(seed).normal(0.0, 2.0, VOCAB).astype(np.float32)
        values[EOS] += eos_boost
        return values

    return logits


class FakeDecoder:
    """Keeps, per row, its request (moves only when the set of requests changes) and its fed tokens."""

    def __init__(self, logits: LogitsFn) -> None:
        self.logits = logits
        self.owners: list[int] = []
        self.histories: list[tuple[int, ...]] = []
        self.steps = 0
        self.rows_per_step: list[int] = []

    def start(self, token_ids: np.ndarray) -> np.ndarray:
        self.owners = list(range(len(token_ids)))
        self.histories = [(int(t),) for t in token_ids]
        return self._logits()

    def step(self, token_ids: np.ndarray) -> np.ndarray:
        assert len(token_ids) == len(self.histories)
        self.histories = [(*h, int(t)) for h, t in zip(self.histories, token_ids, strict=True)]
        return self._logits()

    def select(self, parents: Sequence[np.ndarray], kept: np.ndarray) -> None:
        requests = sorted(set(self.owners), key=self.owners.index)  # current requests, in row order
        for group, position in zip(parents, kept, strict=True):
            assert {self.owners[r] for r in group} == {requests[position]}, "rows and kept requests disagree"
        rows = np.concatenate(parents)
        self.histories = [self.histories[r] for r in rows]
        self.owners = [self.owners[r] for r in rows]

    def _logits(self) -> np.ndarray:
        self.steps += 1
        self.rows_per_step.append(len(self.histories))
        return np.stack([self.logits(o, h) for o, h in zip(self.owners, self.histories, strict=True)])


def without_cache(search: Search, request: int, logits: LogitsFn) -> tuple[list[int], str]:
    """The truth: each step's logits come from the search's own hypotheses."""
    while not search.done:
        if isinstance(search, BeamSearch):
            hypotheses = search.running[: search.rows, : search.cur_len]
        else:
            assert isinstance(search, GreedySearch)
            hypotheses = search.tokens[None, : search.length]
        search.advance(np.stack([logits(request, tuple(int(t) for t in h)) for h in hypotheses]))
    return search.result()


def options(beams: int, max_new: int, ignore_eos: bool = False) -> SearchOptions:
    return SearchOptions(num_beams=beams, max_length=max_new + 1, ignore_eos=ignore_eos)


MIXED = [options(1, 12), options(3, 9), options(2, 15), options(1, 6, ignore_eos=True), options(3, 15), options(4, 4)]


@pytest.mark.parametrize("eos_boost", [0.0, 3.0])
def test_batched_loop_equals_each_search_without_cache(eos_boost: float) -> None:
    logits = hashed_logits(eos_boost)
    truth = [without_cache(make_search(CONFIG, o), i, logits) for i, o in enumerate(MIXED)]
    searches = [make_search(CONFIG, o) for o in MIXED]
    decoder = FakeDecoder(logits)
    timings = generate(decoder, searches, START)
    assert [s.result() for s in searches] == truth
    assert set(timings) >= {"first_decode", "decode_per_token", "decode"}
    assert decoder.rows_per_step[0] == len(MIXED)  # one row per request on the first step, whatever its beams
    assert decoder.steps == max(o.max_new_tokens for o in MIXED) or eos_boost > 0
    reasons = {reason for _, reason in truth}
    assert "length" in reasons
    if eos_boost:
        assert "stop" in reasons


def test_requests_leave_the_batch_when_done() -> None:
    searches = [make_search(CONFIG, options(1, 3)), make_search(CONFIG, options(2, 8))]
    decoder = FakeDecoder(hashed_logits(0.0))
    generate(decoder, searches, START)
    assert decoder.rows_per_step[:4] == [2, 3, 3, 2]  # 1+1, then 1+2 beams, then the greedy request left


def test_cancelled_requests_leave_the_batch() -> None:
    searches = [make_search(CONFIG, options(1, 10)), make_search(CONFIG, options(1, 10))]
    decoder = FakeDecoder(hashed_logits(0.0))
    generate(decoder, searches, START, cancelled=lambda index: index == 0 and searches[0].length >= 3)
    assert decoder.rows_per_step == [2, 2] + [1] * 8
    assert searches[1].done and not searches[0].done


def test_greedy_forces_bos_first_and_eos_last() -> None:
    search = make_search(CONFIG, options(1, 5))
    tokens, reason = without_cache(search, 0, hashed_logits(-50.0))
    assert tokens[0] == BOS and tokens[-1] == EOS and len(tokens) == 5
    assert reason == "length"


def test_greedy_stops_at_eos() -> None:
    def eos_at_third(request: int, history: tuple[int, ...]) -> np.ndarray:
        values = np.zeros(VOCAB, dtype=np.float32)
        values[EOS if len(history) == 3 else 10 + len(history)] = 5.0
        return values

    tokens, reason = without_cache(make_search(CONFIG, options(1, 20)), 0, eos_at_third)
    assert tokens == [BOS, 12, EOS] and reason == "stop"


def test_ignore_eos_generates_max_new_tokens() -> None:
    tokens, reason = without_cache(make_search(CONFIG, options(1, 9, ignore_eos=True)), 0, hashed_logits(50.0))
    assert len(tokens) == 9 and reason == "length"
    tokens, reason = without_cache(make_search(CONFIG, options(3, 9, ignore_eos=True)), 0, hashed_logits(50.0))
    assert len(tokens) == 9 and reason == "length"


def test_beam_search_stops_when_all_beams_finished() -> None:
    def eos_after_two(request: int, history: tuple[int, ...]) -> np.ndarray:
        values = np.random.default_rng(len(history)).normal(0, 1, VOCAB).astype(np.float32)
        if len(history) >= 3:
            values[EOS] = 20.0
        return values

    search = make_search(CONFIG, options(3, 50))
    tokens, reason = without_cache(search, 0, eos_after_two)
    assert reason == "stop" and tokens[-1] == EOS and len(tokens) == 3
    assert search.cur_len < 10  # early stopping: it did not run to max_length


def test_no_repeat_ngram_bans_the_third_token_of_a_seen_trigram() -> None:
    rules = LogitsRules(CONFIG, max_length=100)
    sequences = np.array([[2, 0, 7, 8, 9, 7, 8], [2, 0, 7, 8, 9, 7, 5]])
    scores = rules.apply(sequences, np.zeros((2, VOCAB), dtype=np.float32))
    assert np.isneginf(scores[0]).nonzero()[0].tolist() == [9]
    assert not np.isneginf(scores[1]).any()


def test_forced_tokens() -> None:
    rules = LogitsRules(CONFIG, max_length=6)
    first = rules.apply(np.array([[START]]), np.zeros((1, VOCAB), dtype=np.float32))
    assert np.isfinite(first[0]).nonzero()[0].tolist() == [BOS]
    last = rules.apply(np.array([[2, 0, 11, 12, 13]]), np.zeros((1, VOCAB), dtype=np.float32))
    assert np.isfinite(last[0]).nonzero()[0].tolist() == [EOS]


def test_beam_settled_tokens_are_a_prefix_of_the_result() -> None:
    logits = hashed_logits(1.0)
    search = make_search(CONFIG, options(3, 20))
    seen: list[list[int]] = []
    while not search.done:
        assert isinstance(search, BeamSearch)
        hypotheses = search.running[: search.rows, : search.cur_len]
        search.advance(np.stack([logits(0, tuple(int(t) for t in h)) for h in hypotheses]))
        seen.append(search.settled())
    final, _ = search.result()
    assert seen[-1] == final
    for earlier, later in itertools.pairwise(seen):
        assert later[: len(earlier)] == earlier
    assert any(0 < len(s) < len(final) for s in seen)


def test_generation_config_reads_transformers_defaults(tmp_path: Sequence[str]) -> None:
    import json
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": 2, "pad_token_id": 1}}))
    (folder / "generation_config.json").write_text(json.dumps({"decoder_start_token_id": 2, "num_beams": 3}))
    config = GenerationConfig.from_model_dir(folder)
    assert config.eos_token_ids == (2,) and config.pad_token_id == 1 and config.num_beams == 3
    assert config.no_repeat_ngram_size == 0 and config.max_length == 20 and config.early_stopping is False
    assert config.default_max_new_tokens == 19


@pytest.mark.parametrize("text_model", ["bart", "florence2_language"])
def test_generation_config_falls_back_to_bart_defaults(tmp_path: Sequence[str], text_model: str) -> None:
    """transformers leaves ids equal to BART's defaults out of a saved config.json; the hub's generation config
    names none: the folder still loads with BART's ids, as transformers reads it."""
    import json
    from pathlib import Path

    folder = Path(str(tmp_path))
    (folder / "config.json").write_text(json.dumps({"text_config": {"model_type": text_model}}))
    (folder / "generation_config.json").write_text(json.dumps({"num_beams": 3, "early_stopping": False}))
    config = GenerationConfig.from_model_dir(folder)
    assert (config.decoder_start_token_id, config.eos_token_ids, config.pad_token_id) == (2, (2,), 1)
    assert config.num_beams == 3 and config.early_stopping is False


def test_generation_config_without_ids_of_an_unknown_text_model_is_refused(tmp_path: Sequence[str]) -> None:
    import json
    from pathlib import Path

    from runtime.errors import ModelLoadFailed

    folder = Path(str(tmp_path))
    (folder / "config.json").write_text(json.dumps({"text_config": {"model_type": "t5"}}))
    (folder / "generation_config.json").write_text(json.dumps({"num_beams": 3}))
    with pytest.raises(ModelLoadFailed, match="names no eos_token_id or decoder_start_token_id"):
        GenerationConfig.from_model_dir(folder)


def test_each_request_is_finished_at_the_step_it_leaves() -> None:
    searches = [
        make_search(CONFIG, options(1, 3)),
        make_search(CONFIG, options(2, 8)),
        make_search(CONFIG, options(1, 5)),
    ]
    decoder = FakeDecoder(hashed_logits(0.0))
    heard: list[tuple[int, int, float]] = []  # (request, decoder steps so far, decode seconds so far)
    generate(
        decoder,
        searches,
        START,
        finished=lambda index, timings: heard.append((index, decoder.steps, timings["decode"])),
    )
    assert sorted(index for index, _, _ in heard) == [0, 1, 2]  # each once
    steps = {index: step for index, step, _ in heard}
    assert steps[0] == 3 and steps[2] == 5  # greedy: one decoder step per token, then out
    assert steps[1] == decoder.steps  # the beam search is the last one decoding
    assert [index for index, _, _ in heard] == [0, 2, 1]
    decode = [seconds for _, _, seconds in heard]
    assert decode == sorted(decode) and decode[0] > 0
