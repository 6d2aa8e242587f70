"""Differential fuzz of the engine's generation against transformers' ``generate``: random images, tasks, 1-4 beams,
5-30 new tokens, padded batches of 1-3 requests, and generation configs with and without the no-repeat rule, forced
BOS/EOS and each early-stopping mode.

Every request whose tokens differ from transformers' is arbitrated (beam_arbitration.py): transformers' search is
replayed on its own logits (which must give its tokens exactly: the search is the same) and the step where it drops
the engine's answer is found; the divergence passes only as a near tie of that decision (or of an earlier cut),
under the logits' rounding tolerance, and is printed with its margin. ``FUZZ_BEAM_CASES`` sets the number of
requests: 50 in ``make test``, 500 in ``make fuzz``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from beam_arbitration import arbitrate
from engine_cases import noise_image, run_direct
from engine_oracle import TIE_TOLERANCE, Case, Oracle, replay

from runtime.engine import EngineSettings, TaskRequest, load
from runtime.engine.generation_config import GenerationConfig, SearchOptions
from runtime.engine.model import Florence2Engine
from runtime.engine.sessions import VISION_ENCODER
from runtime.florence2 import TASKS, InputKind

CASES = int(os.environ.get("FUZZ_BEAM_CASES", "50"))
# generation_config.json edits; the checkpoint's own: no_repeat_ngram_size 3, forced BOS and EOS, early_stopping true.
CONFIGS: dict[str, dict[str, Any]] = {
    "checkpoint": {},
    "no-repeat-off": {"no_repeat_ngram_size": 0},
    "early-stopping-false": {"early_stopping": False},
    "early-stopping-never": {"early_stopping": "never"},
    "unforced": {"forced_bos_token_id": None, "forced_eos_token_id": None},
}
WORDS = ("a", "green", "car", "door", "the", "person", "on", "left", "red", "bicycle", "yellow", "building")


@dataclass(frozen=True)
class Batch:
    config: str
    num_beams: int
    max_new_tokens: int
    cases: tuple[Case, ...]


def batches(total: int) -> Iterator[Batch]:
    """Seeded batches of 1-3 requests, ``total`` requests in all."""
    rng = random.Random(1234)
    made, index = 0, 0
    while made < total:
        size = min(rng.randint(1, 3), total - made)
        cases = []
        for _ in range(size):
            tag = rng.choice(sorted(TASKS))
            kind = TASKS[tag].input_kind
            if kind is InputKind.REGION:
                x1, y1 = rng.randint(0, 900), rng.randint(0, 900)
                text = "".join(f"<loc_{v}>" for v in (x1, y1, rng.randint(x1, 999), rng.randint(y1, 999)))
            elif kind is InputKind.TEXT:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
            else:
                text = None
            image = noise_image((rng.randint(8, 600), rng.randint(8, 600)), seed=10_000 + index)
            cases.append(Case(image, tag, text))
            index += 1
        yield Batch(rng.choice(sorted(CONFIGS)), rng.randint(1, 4), rng.randint(5, 30), tuple(cases))
        made += size


@dataclass
class Variant:
    engine: Florence2Engine
    config: GenerationConfig
    overrides: dict[str, Any]


@pytest.fixture(scope="module")
def variants(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Variant]]:
    made = {}
    for name, overrides in CONFIGS.items():
        folder = tmp_path_factory.mktemp(f"gen-{name}")
        for item in tiny_model_dir.iterdir():
            if item.name != "generation_config.json":
                (folder / item.name).symlink_to(item)
        generation = json.loads((tiny_model_dir / "generation_config.json").read_text()) | overrides
        (folder / "generation_config.json").write_text(json.dumps(generation))
        engine = load(folder, EngineSettings(max_batch_size=8, warmup=False))
        made[name] = Variant(engine, GenerationConfig.from_model_dir(folder), overrides)
    yield made
    for variant in made.values():
        asyncio.run(variant.engine.close())


@pytest.fixture(scope="module")
def oracle(tiny_checkpoint: Path, variants: dict[str, Variant]) -> Oracle:
    return Oracle(tiny_checkpoint, variants["checkpoint"].engine.runner)


def reference(oracle: Oracle, variant: Variant, batch: Batch) -> list[tuple[list[int], list[np.ndarray]]]:
    """transformers' tokens (through the first EOS) and raw logits per step for each request of the batch."""
    inputs = oracle.inputs(batch.cases)
    (features,) = oracle.vision.run(VISION_ENCODER, {"pixel_values": inputs["pixel_values"].numpy()})
    with oracle._vision_output(features), torch.no_grad():
        out = oracle.model.generate(
            **inputs,
            max_new_tokens=batch.max_new_tokens,
            num_beams=batch.num_beams,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            **variant.overrides,
        )
    logits = [step.float().numpy() for step in out.logits]
    found = []
    for item, sequence in enumerate(out.sequences.tolist()):
        tokens = sequence[1:]
        for position, token in enumerate(tokens):
            if token in variant.config.eos_token_ids:
                tokens = tokens[: position + 1]
                break
        rows = batch.num_beams
        found.append((tokens, [step[item * rows : (item + 1) * rows] for step in logits]))
    return found


@pytest.mark.slow
def test_generation_equals_transformers_but_for_near_ties(
    oracle: Oracle, variants: dict[str, Variant], capsys: pytest.CaptureFixture[str]
) -> None:
    counts = {"requests": 0, "identical": 0, "near ties": 0}
    failures, ties = [], []
    for number, batch in enumerate(batches(CASES)):
        variant = variants[batch.config]
        options = SearchOptions(num_beams=batch.num_beams, max_length=batch.max_new_tokens + 1)
        requests = [
            TaskRequest(image=c.image, task=c.task, text_input=c.text_input, max_new_tokens=batch.max_new_tokens,
                        num_beams=batch.num_beams)
            for c in batch.cases
        ]  # fmt: skip
        results = run_direct(variant.engine, requests)
        for item, ((tokens, logits), result) in enumerate(zip(reference(oracle, variant, batch), results, strict=True)):
            counts["requests"] += 1
            label = (
                f"batch {number} item {item}: {batch.cases[item].task} config={batch.config} "
                f"beams={batch.num_beams} max_new_tokens={batch.max_new_tokens} batch of {len(batch.cases)}"
            )
            replayed, _ = replay(variant.config, options, logits)
            if replayed != tokens:
                failures.append(f"{label}: our search on transformers' logits gives {replayed}, not {tokens}")
                continue
            if list(result.token_ids) == tokens:
                counts["identical"] += 1
                continue
            verdict = arbitrate(variant.config, options, logits, list(result.token_ids))
            message = f"{label}: {verdict.describe()}\n  transformers {tokens}\n  engine       {list(result.token_ids)}"
            if verdict.near_tie(TIE_TOLERANCE):
                counts["near ties"] += 1
                ties.append(message)
            else:
                failures.append(message)
    with capsys.disabled():
        print(f"\nbeam fuzz: {counts}, tie tolerance {TIE_TOLERANCE}")
        for tie in ties:
            print(f"near tie: {tie}")
    assert counts["requests"] == CASES
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_arbitration_rejects_an_answer_transformers_clearly_ruled_out(
    oracle: Oracle, variants: dict[str, Variant], num_beams: int
) -> None:
    """Negative control: the reference answer with its second token replaced by the least likely one is no near
    tie (the first is forced BOS, so no earlier cut is close either)."""
    variant = variants["checkpoint"]
    batch = Batch("checkpoint", num_beams, 12, (Case(noise_image((120, 90), 3), "<OD>"),))
    options = SearchOptions(num_beams=num_beams, max_length=13)
    ((tokens, logits),) = reference(oracle, variant, batch)
    assert len(tokens) >= 3
    wrong = [*tokens[:1], int(np.argmin(logits[1][0])), *tokens[2:]]
    verdict = arbitrate(variant.config, options, logits, wrong)
    assert not verdict.near_tie(TIE_TOLERANCE), verdict.describe()
    assert verdict.step == 1 and verdict.margin > 1.0, verdict.describe()
