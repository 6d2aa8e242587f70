"""Fixtures for the Florence-2 processing tests: our processor, and transformers' as the oracle (tiny checkpoint).

Hypothesis runs under the ``florence2-parity`` profile: derandomized, no example database, no deadline, so CI
sees the same bounded set of examples on every run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from runtime.florence2 import Florence2Processor

settings.register_profile(
    "florence2-parity",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Worst preprocessing difference seen in this run, printed in the terminal summary.
PREPROCESS_WORST: dict[str, Any] = {"max_abs_diff": 0.0, "case": None, "images": 0}


@pytest.fixture(scope="session")
def preprocess_worst() -> dict[str, Any]:
    return PREPROCESS_WORST


@pytest.fixture(scope="session")
def processor(tiny_checkpoint: Path) -> Florence2Processor:
    return Florence2Processor.from_model_dir(tiny_checkpoint)


@pytest.fixture(scope="session")
def oracle(tiny_checkpoint: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)  # fast tokenizer, slow CLIPImageProcessor


Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="session")
def checkpoint_variant(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A copy of the tiny checkpoint's processing files (no weights) with JSON files edited: ``{name: edit}``."""

    def make(edits: dict[str, Edit]) -> Path:
        out = tmp_path_factory.mktemp("variant")
        for item in tiny_checkpoint.iterdir():
            if item.suffix != ".safetensors":
                shutil.copy(item, out / item.name)
        for filename, edit in edits.items():
            data = json.loads((out / filename).read_text())
            edit(data)
            (out / filename).write_text(json.dumps(data))
        return out

    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if PREPROCESS_WORST["images"]:
        terminalreporter.write_line(
            f"florence2 preprocessing parity: worst max |ours - CLIPImageProcessor| = "
            f"{PREPROCESS_WORST['max_abs_diff']:.3g} over {PREPROCESS_WORST['images']} images "
            f"(worst case: {PREPROCESS_WORST['case']})"
        )
