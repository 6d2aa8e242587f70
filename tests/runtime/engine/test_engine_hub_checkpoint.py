"""A checkpoint laid out exactly as ``microsoft/Florence-2-large`` is on the hub, exported with validation on, is
served with the ids of the original code: transformers on the converted weights, generating with the settings the
original ``generate()`` takes from the hub's ``text_config`` (not from our converted generation_config.json).

The conversion's weights are shown equal to the original's (float16 on the hub) in tests/export/test_export_remote.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_cases import MAX_NEW_TOKENS, loaded, request, run_direct
from engine_oracle import Case, Oracle, Reference, parity_failures
from hub_checkpoint import HUB_GENERATION_CONFIG, HUB_TEXT_GENERATION

from runtime.engine.model import Florence2Engine

pytestmark = pytest.mark.slow  # minutes: the hub-layout checkpoint is built, converted and exported first


@pytest.fixture(scope="module")
def hub_engine(hub_model_dir: Path) -> Iterator[Florence2Engine]:
    with loaded(hub_model_dir) as engine:
        yield engine


@pytest.fixture(scope="module")
def original(hub_native_checkpoint: Path, hub_engine: Florence2Engine) -> Oracle:
    return Oracle(hub_native_checkpoint, hub_engine.runner, generation={**HUB_TEXT_GENERATION, "max_length": 1025})


@pytest.fixture(scope="module")
def references(original: Oracle, cases: list[Case]) -> dict[int, list[Reference]]:
    return {
        beams: [original.generate([c], num_beams=beams, max_new_tokens=MAX_NEW_TOKENS)[0] for c in cases]
        for beams in (1, 3)
    }


def test_engine_reads_the_original_generation_settings(hub_engine: Florence2Engine) -> None:
    config = hub_engine.config
    assert config.decoder_start_token_id == 2 and config.eos_token_ids == (2,) and config.pad_token_id == 1
    assert config.forced_bos_token_id == 0 and config.forced_eos_token_ids == (2,)
    assert (config.no_repeat_ngram_size, config.num_beams, config.early_stopping) == (3, 3, True)


@pytest.mark.parametrize("beams", [1, 3])
def test_served_ids_equal_the_original(
    references: dict[int, list[Reference]], hub_engine: Florence2Engine, cases: list[Case], beams: int
) -> None:
    results = [run_direct(hub_engine, [request(c, beams)])[0] for c in cases]
    failures, _ = parity_failures(
        references[beams], [r.token_ids for r in results], [f"hub layout beams={beams} {c.task}" for c in cases]
    )
    assert not failures, "\n".join(failures)


def test_the_hub_generation_config_alone_would_not_be_the_original(
    references: dict[int, list[Reference]], hub_model_dir: Path, cases: list[Case], tmp_path: Path
) -> None:
    """Negative control: served with the hub's own generation_config.json (no ids, no n-gram rule, no forced BOS),
    the folder loads only through BART's default ids and then parts from the original."""
    folder = tmp_path / "model"
    shutil.copytree(hub_model_dir, folder)
    (folder / "generation_config.json").write_text(json.dumps(HUB_GENERATION_CONFIG))
    with loaded(folder) as engine:
        results = [run_direct(engine, [request(c, 1)])[0] for c in cases]
    failures, _ = parity_failures(references[1], [r.token_ids for r in results], [c.task for c in cases])
    assert len(failures) >= len(cases) // 2
