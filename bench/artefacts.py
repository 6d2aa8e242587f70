"""The checkpoint and model folder the benchmark runs on: reused when present, built when not.

Random weights of the real architecture are enough to time it (no download): ``python -m export.tiny --arch
large`` writes the checkpoint, ``python -m export`` the model folder. Both are built under a temporary name and
renamed when complete, so an interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from runtime import model_folder as layout  # the model folder's file names

ONNX_GRAPHS: tuple[str, ...] = layout.GRAPHS
VARIANTS: tuple[str, ...] = layout.EXPORT_DTYPES


class BuildFailed(RuntimeError):
    """Building the checkpoint or the model folder failed; the builder's own output says why."""


def checkpoint_ready(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def model_ready(path: Path) -> bool:
    return (path / "export.json").is_file() and (path / "onnx" / "decoder_model_merged.onnx").is_file()


def variants_in(model_dir: Path) -> tuple[str, ...]:
    """The variants whose four graphs are all in the folder (a variant may read some from another's files)."""
    return tuple(
        variant for variant in VARIANTS if all(graph_path(model_dir, graph, variant).is_file() for graph in ONNX_GRAPHS)
    )


def _run(command: list[str], progress: Callable[[str], None]) -> None:
    progress("$ " + " ".join(command))
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise BuildFailed(f"{' '.join(command)} failed with exit code {completed.returncode}")


def _build_into(final: Path, build: Callable[[Path], None], replace: bool = False) -> None:
    """Build into a temporary sibling, then rename it to ``final``. An existing ``final`` is kept (someone else
    built it meanwhile, as good as ours) unless ``replace``, where it is swapped out and removed."""
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    build(partial)
    if final.exists() and not replace:
        shutil.rmtree(partial)
        return
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(retired)
        partial.rename(final)
        shutil.rmtree(retired)
        return
    partial.rename(final)


def ensure_checkpoint(path: Path, arch: str, *, progress: Callable[[str], None] = print) -> Path:
    if checkpoint_ready(path):
        progress(f"reusing checkpoint {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _build_into(
        path, lambda out: _run([sys.executable, "-m", "export.tiny", "--arch", arch, "--out", str(out)], progress)
    )
    return path


def ensure_model(
    model_dir: Path,
    checkpoint: Path,
    dtypes: tuple[str, ...],
    *,
    complete: bool = False,
    progress: Callable[[str], None] = print,
) -> Path:
    """Reuse ``model_dir`` if it was exported, else export ``checkpoint`` into it with ``dtypes``. A folder
    lacking one of ``dtypes`` is reused as it is, unless ``complete``: it is then exported again with them."""
    present = variants_in(model_dir) if model_ready(model_dir) else ()
    missing = [d for d in dtypes if d not in present]
    if present and not missing:
        progress(f"reusing model folder {model_dir}")
        return model_dir
    if present and not complete:
        progress(f"reusing model folder {model_dir} (it has no {', '.join(missing)} graphs)")
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    wanted = tuple(dict.fromkeys((*present, *dtypes)))
    dtype_flags = [flag for dtype in wanted for flag in ("--dtype", dtype)]
    _build_into(
        model_dir,
        lambda out: _run([sys.executable, "-m", "export", str(checkpoint), "--out", str(out), *dtype_flags], progress),
        replace=bool(present),
    )
    return model_dir


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def graph_path(model_dir: Path, graph: str, variant: str) -> Path:
    return model_dir / "onnx" / layout.file_name(graph, variant)
