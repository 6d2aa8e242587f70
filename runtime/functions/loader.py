"""Importing a function's module, with the ``AI`` global injected, and re-importing it when its files change."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from runtime.functions.discovery import FunctionSource
from runtime.functions.env import Env, read_env_files
from runtime.functions.secrets import SECRETS

MODULE_PREFIX = "florence_functions"
_VERSIONS = itertools.count(1)  # process-wide: two runners never share a module name


@dataclass(frozen=True)
class LoadedFunction:
    source: FunctionSource
    fingerprint: str
    module: ModuleType
    fetch: Callable[..., Any]
    is_async: bool
    variables: dict[str, str]
    args: dict[str, Any]


class FunctionImportError(Exception):
    """A function's module (or its .env / args.json) could not be loaded; the cause is chained."""


class ModuleImporter:
    """Imports each version of a function under a fresh module name, so a reload never mixes old and new code."""

    def __init__(self, ai: Any) -> None:
        self._ai = ai
        self._lock = threading.Lock()

    def load(self, source: FunctionSource, fingerprint: str, previous_module: str | None) -> LoadedFunction:
        """Blocking (runs the module's top level): call it from a worker thread. ``previous_module`` is the module
        name of the version this one replaces (by name only: the thread must not keep the old version alive)."""
        try:
            return self._load(source, fingerprint)
        finally:
            if previous_module is not None:
                _forget(previous_module)  # replaced, by the new version or by the failure to load it

    def _load(self, source: FunctionSource, fingerprint: str) -> LoadedFunction:
        try:
            variables = read_env_files(source.env_files)
            args = _read_args(source)
        except (OSError, ValueError) as exc:
            raise FunctionImportError(f"{type(exc).__name__}: {exc}") from exc
        # Known before the module runs: its import errors are scrubbed too.
        SECRETS.set(source.name, Env(variables, None).secret_values())
        module_name = f"{MODULE_PREFIX}.{_identifier(source.name)}_v{next(_VERSIONS)}"
        spec = importlib.util.spec_from_file_location(
            module_name,
            source.entry,
            submodule_search_locations=[str(source.folder)] if source.folder is not None else None,
        )
        if spec is None or spec.loader is None:
            raise FunctionImportError(f"cannot import {source.entry}")
        module = importlib.util.module_from_spec(spec)
        module.AI = self._ai  # type: ignore[attr-defined]  # the platform's global, visible at import time too
        with self._lock:
            sys.modules.setdefault(MODULE_PREFIX, ModuleType(MODULE_PREFIX))
            sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            _forget(module_name)
            raise FunctionImportError(f"{type(exc).__name__}: {exc}") from exc
        fetch = getattr(module, "fetch", None)
        if not callable(fetch):
            _forget(module_name)
            raise FunctionImportError(f"{source.entry.name} defines no fetch(request, env, ctx)")
        return LoadedFunction(
            source=source,
            fingerprint=fingerprint,
            module=module,
            fetch=fetch,
            is_async=asyncio.iscoroutinefunction(fetch),
            variables=variables,
            args=args,
        )


def _read_args(source: FunctionSource) -> dict[str, Any]:
    if not source.args_file.is_file():
        return {}
    try:
        args = json.loads(source.args_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source.args_file.name} is not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise ValueError(f"{source.args_file.name} must hold a JSON object")
    return args


def _identifier(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _forget(module_name: str) -> None:
    for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
        del sys.modules[name]
