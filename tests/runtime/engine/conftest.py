"""Fixtures of the engine tests: the tiny exported model, its engine, and transformers as the oracle.

Engines and the oracle are module-scoped (loading is cheap; sharing keeps the runs independent of test order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_cases import every_task_case, loaded
from engine_oracle import Case, Oracle

from runtime.engine.model import Florence2Engine


@pytest.fixture(scope="session")
def community_model_dir(tiny_model_dir: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an onnx-community folder: every transformers.js suffix (community_folder.py)."""
    from community_folder import build_community_folder

    return build_community_folder(tiny_model_dir, tiny_checkpoint, tmp_path_factory.mktemp("community") / "model")


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[Florence2Engine]:
    with loaded(tiny_model_dir) as engine:
        yield engine


@pytest.fixture(scope="module")
def oracle(tiny_checkpoint: Path, engine: Florence2Engine) -> Oracle:
    return Oracle(tiny_checkpoint, engine.runner)


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return every_task_case()
