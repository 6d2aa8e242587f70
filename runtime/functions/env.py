"""``env``: a function's variables and secrets from ``.env`` files, and the ``AI`` binding."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from runtime.functions.secrets import is_secret_name


def read_env_files(files: tuple[Path, ...]) -> dict[str, str]:
    """Later files win: the function's own ``.env`` over the project's."""
    values: dict[str, str] = {}
    for path in files:
        if path.is_file():
            values.update({key: value or "" for key, value in dotenv_values(path).items()})
    return values


class Env(Mapping[str, Any]):
    """Read-only; ``env.NAME`` and ``env["NAME"]`` both work, and ``env.AI`` is the binding.

    Its repr names the variables but shows no value, so printing ``env`` leaks nothing.
    """

    def __init__(self, values: Mapping[str, str], ai: Any) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_ai", ai)

    def __getattr__(self, name: str) -> Any:
        if name == "AI":
            return self._ai
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"env has no variable {name!r}; set it in the project's or the function's .env"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("env is read-only")

    def __getitem__(self, name: str) -> Any:
        if name == "AI":
            return self._ai
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(["AI", *self._values])

    def __len__(self) -> int:
        return len(self._values) + 1

    def secret_values(self) -> list[str]:
        return [value for name, value in self._values.items() if is_secret_name(name)]

    def __repr__(self) -> str:
        names = [f"{name} (secret)" if is_secret_name(name) else name for name in self._values]
        return f"Env(AI, {', '.join(names)})" if names else "Env(AI)"
