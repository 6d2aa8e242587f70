"""``runtime`` and every module in it import without torch, transformers or optimum (checked in a fresh process)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import runtime
names = ["runtime"] + [m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]
names = [name for name in names if name != "runtime.__main__"]  # importing it runs the CLI
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:  # runtime.cluster's Ray modules, where the ray extra is not installed
        if (exc.name or "").split(".")[0] != "ray":
            raise
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum"))
print(len(names), ",".join(heavy))
"""


def test_runtime_imports_no_torch() -> None:
    completed = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300, check=True)
    count, _, heavy = completed.stdout.strip().partition(" ")
    assert int(count) > 30  # every subpackage was walked
    assert heavy == "", f"runtime pulled in {heavy}"


def test_the_check_would_see_torch() -> None:
    """Negative control: the same check run after importing a module that needs torch reports it."""
    probe = "import sys\nsys.modules['torch'] = type(sys)('torch')\n" + CHECK
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True)
    assert completed.stdout.strip().endswith("torch")
