"""Session-wide fixtures: the tiny random-weight checkpoint, its ONNX export, and the same model in the layout of
the original hub checkpoints (hub_checkpoint.py) with its export, are built once per test run.

Set ``FLORENCE_TEST_CACHE=DIR`` to keep them between runs (the folder is reused when its stamp matches).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TINY_SEED = 0


def _cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("FLORENCE_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.getbasetemp() / "florence-cache"


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Serialise builders of one cached artefact (parallel test runs may share FLORENCE_TEST_CACHE)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build_once(out: Path, stamp: str, build: Callable[[Path], object]) -> Path:
    """Build into a scratch folder and rename it into place, so a reader never sees a half-written artefact."""
    with _exclusive(out):
        if not (out / stamp).exists():
            scratch = out.with_name(out.name + ".partial")
            shutil.rmtree(scratch, ignore_errors=True)
            build(scratch)
            shutil.rmtree(out, ignore_errors=True)
            scratch.rename(out)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face-format random-weight Florence-2 checkpoint (``export.tiny --arch tiny``)."""
    from export.tiny import build_checkpoint

    out = _cache_root(tmp_path_factory) / f"ckpt-tiny-{TINY_SEED}"
    return _build_once(out, "model.safetensors", lambda path: build_checkpoint(path, arch="tiny", seed=TINY_SEED))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported to a model folder (fp32, fp16 and int8 graphs), validated by the exporter."""
    from export.exporter import export_model

    out = _cache_root(tmp_path_factory) / f"model-tiny-{TINY_SEED}"
    return _build_once(
        out,
        "export.json",
        lambda path: export_model(str(tiny_checkpoint), path, dtypes=("fp32", "fp16", "int8"), validate=True),
    )


@pytest.fixture(scope="session")
def hub_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model laid out exactly as ``microsoft/Florence-2-large`` is on the hub (hub_checkpoint.py)."""
    from hub_checkpoint import make_remote_checkpoint

    out = _cache_root(tmp_path_factory) / f"hub-tiny-{TINY_SEED}"
    return _build_once(out, "pytorch_model.bin", lambda path: make_remote_checkpoint(tiny_checkpoint, path))


@pytest.fixture(scope="session")
def hub_native_checkpoint(hub_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hub_checkpoint`` converted to transformers' native layout (what transformers runs as the oracle)."""
    from export.remote_format import convert_checkpoint

    out = _cache_root(tmp_path_factory) / f"hub-native-tiny-{TINY_SEED}"
    return _build_once(out, "config.json", lambda path: convert_checkpoint(hub_checkpoint, path))


@pytest.fixture(scope="session")
def hub_model_dir(hub_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hub_checkpoint`` exported with validation on, as ``python -m export microsoft/Florence-2-large`` does."""
    from export.exporter import export_model

    out = _cache_root(tmp_path_factory) / f"model-hub-tiny-{TINY_SEED}"
    return _build_once(
        out, "export.json", lambda path: export_model(str(hub_checkpoint), path, dtypes=("fp32",), validate=True)
    )


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """Whatever a test configures on the root logger (``python -m runtime`` run in-process configures logging for
    good) is taken back at its end, so no handler or level leaks into the tests after it."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
