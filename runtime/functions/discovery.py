"""Where a function lives: ``<dir>/<name>.py`` or ``<dir>/<name>/index.py``, and the files that make it up."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.route_table import RESERVED_NAMES

# Bounded well below the file system's 255 bytes a name: a longer path segment is no function, not an OSError.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


@dataclass(frozen=True)
class FunctionSource:
    name: str
    entry: Path  # the module that defines fetch
    folder: Path | None  # the function's own folder (index.py form), a package for relative imports
    env_files: tuple[Path, ...]  # project .env first, then the function's own: later files win
    args_file: Path

    def watched_files(self) -> list[Path]:
        files = [self.entry, *self.env_files, self.args_file]
        if self.folder is not None:
            files += [p for p in self.folder.rglob("*.py") if "__pycache__" not in p.parts]
        return sorted(set(files))

    def fingerprint(self) -> str:
        """Changes whenever a file of the function changes (content, not mtime: two saves in one tick count)."""
        digest = hashlib.sha256()
        for path in self.watched_files():
            digest.update(str(path).encode())
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"\0missing")
        return digest.hexdigest()


def find_function(functions_dir: Path, name: str) -> FunctionSource | None:
    if not NAME.match(name) or name in RESERVED_NAMES:
        return None
    project_env = functions_dir / ".env"
    folder = functions_dir / name
    if (folder / "index.py").is_file():
        return FunctionSource(name, folder / "index.py", folder, (project_env, folder / ".env"), folder / "args.json")
    single = functions_dir / f"{name}.py"
    if single.is_file():
        return FunctionSource(
            name, single, None, (project_env, functions_dir / f"{name}.env"), functions_dir / f"{name}.args.json"
        )
    return None


def list_functions(functions_dir: Path) -> list[str]:
    if not functions_dir.is_dir():
        return []
    names = {p.stem for p in functions_dir.glob("*.py")} | {p.parent.name for p in functions_dir.glob("*/index.py")}
    return sorted(name for name in names if find_function(functions_dir, name) is not None)
