"""Session-wide fixtures: the tiny random-weight checkpoint and its ONNX export are built once per test run.

Set ``FLORENCE_TEST_CACHE=DIR`` to keep them between runs (the folder is reused when its stamp matches).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TINY_SEED = 0


def _cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("FLORENCE_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.getbasetemp() / "florence-cache"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face-format random-weight Florence-2 checkpoint (``export.tiny --arch tiny``)."""
    from export.tiny import build_checkpoint

    out = _cache_root(tmp_path_factory) / f"ckpt-tiny-{TINY_SEED}"
    if not (out / "model.safetensors").exists():
        shutil.rmtree(out, ignore_errors=True)
        build_checkpoint(out, arch="tiny", seed=TINY_SEED)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported to a model folder (fp32, fp16 and int8 graphs), validated by the exporter."""
    from export.exporter import export_model

    out = _cache_root(tmp_path_factory) / f"model-tiny-{TINY_SEED}"
    if not (out / "export.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        export_model(str(tiny_checkpoint), out, dtypes=("fp32", "fp16", "int8"), validate=True)
    return out
