"""Fixtures of the exporter tests: the tiny PyTorch model (the oracle) and ONNX sessions of its export.

Helpers live in remote_fixture.py and broken_sessions.py (this folder is on sys.path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from export.greedy import open_sessions


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> Any:
    from transformers import Florence2ForConditionalGeneration

    return Florence2ForConditionalGeneration.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def tiny_processor(tiny_checkpoint: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="session")
def fp32_sessions(tiny_model_dir: Path) -> dict[str, Any]:
    return open_sessions(tiny_model_dir, "fp32")
