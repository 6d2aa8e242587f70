"""``python -m export``: clear errors and non-zero exits for what the user got wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from export import cli, exporter, folder

ROOT = Path(__file__).resolve().parents[2]


def _run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_non_empty_output_folder_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    done = _run_module(str(tiny_checkpoint), "--out", str(tmp_path))
    assert done.returncode == 2
    assert "not empty" in done.stderr and "--force" in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_force_replaces_the_folder(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "stale.onnx").write_text("old")
    assert cli.main([str(tiny_checkpoint), "--out", str(tmp_path), "--force", "--no-validate"]) == 0
    assert not (tmp_path / "stale.onnx").exists()
    assert json.loads((tmp_path / "export.json").read_text())["validated"] is False
    assert "not validated" in capsys.readouterr().out


def test_force_never_empties_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".git").mkdir()
    assert cli.main(["whatever", "--out", str(tmp_path), "--force"]) == 2
    assert "refusing to empty" in capsys.readouterr().err
    assert (tmp_path / ".git").is_dir()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "bert"})), "not Florence-2"),
        (lambda d: (d / "weights.bin").write_text(""), "no config.json"),
    ],
    ids=["other-model", "no-config"],
)
def test_not_a_florence_folder(make: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make(source)
    assert cli.main([str(source), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_local_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["./no/such/folder", "--out", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline", "unreachable-endpoint"],
)
@pytest.mark.slow  # two processes that import torch and time out on the hub
def test_hub_id_that_cannot_be_fetched(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    done = _run_module("nobody-here/not-a-florence-model", "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 2, done.stderr
    assert "cannot fetch 'nobody-here/not-a-florence-model' from the Hugging Face hub" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_export_extra_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    real = importlib.import_module

    def without_optimum(name: str, *args: Any) -> Any:
        if name.startswith("optimum"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_optimum)
    assert cli.main(["whatever", "--out", str(tmp_path / "out")]) == 3
    assert "pip install -e '.[export]'" in capsys.readouterr().err


def test_not_enough_disk_space(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = SimpleNamespace(total=10**9, used=10**9 - 1000, free=1000)
    monkeypatch.setattr(folder.shutil, "disk_usage", lambda path: full)
    assert cli.main([str(tiny_checkpoint), "--out", str(tmp_path / "out")]) == 4
    err = capsys.readouterr().err
    assert "needs about" in err and "GiB free" in err
    assert not list((tmp_path / "out").glob("onnx/*"))


def test_estimate_grows_with_dtypes() -> None:
    fp32 = folder.estimate_bytes(10**8, 10**7, ("fp32",))
    assert fp32 >= 4 * 10**8
    assert folder.estimate_bytes(10**8, 10**7, ("fp32", "fp16", "int8")) > fp32


def test_unknown_dtype_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(exporter.ExportError, match="unknown dtype 'bf16'"):
        exporter.export_model(str(tiny_checkpoint), tmp_path, dtypes=("bf16",))
