"""The Makefile's install and serve targets, read through ``make -n`` (what would run, nothing installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_serving_a_prebuilt_folder_installs_no_torch(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "export.json").write_text("{}")
    planned = _dry_run("serve", f"VENV={tmp_path}/venv", f"MODEL_DIR={tmp_path}/model")
    assert planned.returncode == 0, planned.stderr
    assert "pip install -q -e .\n" in planned.stdout
    assert "torch" not in planned.stdout and "[export" not in planned.stdout
    # the server replaces make's shell, so a SIGTERM it drains is the exit status make reports
    assert f"exec {tmp_path}/venv/bin/python -m runtime serve" in planned.stdout
    assert f"--model microsoft-florence-2-large={tmp_path}/model" in planned.stdout


def test_install_serve_is_the_base_dependencies_only(tmp_path: Path) -> None:
    planned = _dry_run("install-serve", f"VENV={tmp_path}/venv")
    assert planned.returncode == 0, planned.stderr
    assert "pip install -q -e .\n" in planned.stdout and "torch" not in planned.stdout


def test_serve_on_a_fresh_clone_builds_the_tiny_model(tmp_path: Path) -> None:
    """Without the default folder, `make serve` still installs the export tools and builds the tiny model."""
    tiny = tmp_path / "tiny"
    planned = _dry_run("serve", f"VENV={tmp_path}/venv", f"MODEL_DIR={tiny}", f"TINY_DIR={tiny}")
    assert planned.returncode == 0, planned.stderr
    assert 'pip install -q "torch==' in planned.stdout and ".[export,test,bench,ray,openvino]" in planned.stdout
    assert "-m export.tiny --out checkpoints/tiny" in planned.stdout
    assert f"-m export checkpoints/tiny --out {tiny}" in planned.stdout


def test_serving_a_folder_that_was_never_exported_says_how_to_export(tmp_path: Path) -> None:
    planned = _dry_run("serve", f"VENV={tmp_path}/venv", f"MODEL_DIR={tmp_path}/missing")
    assert planned.returncode != 0
    assert f"{tmp_path}/missing holds no export.json" in planned.stdout and "make export" in planned.stdout
    assert "torch" not in planned.stdout
