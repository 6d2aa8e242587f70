"""Invoking a function: find it, (re)load it, call ``fetch(request, env, ctx)`` within its time limit.

Whatever a function does wrong (fails to import, raises, returns something odd, runs too long) becomes that
request's error, logged with a traceback for the developer; the server and other functions carry on. Scrubbed of
secrets both in the log and in the error body.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import traceback
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from runtime.errors import FunctionFailed, FunctionNotFound, RequestTimeout, RuntimeErrorBase
from runtime.functions.context import Context, run_after_response
from runtime.functions.discovery import FunctionSource, find_function, list_functions
from runtime.functions.env import Env
from runtime.functions.loader import FunctionImportError, LoadedFunction, ModuleImporter
from runtime.functions.secrets import SECRETS
from runtime.untrusted import quote

log = logging.getLogger(__name__)

TIMEOUT_SETTING = "FLORENCE_INVOCATION_TIMEOUT_S"


@dataclass(frozen=True)
class _ImportFailure:
    fingerprint: str
    message: str


@dataclass(frozen=True)
class Invocation:
    name: str
    request_id: str
    response: Response
    pending: list[Awaitable[Any]]  # ctx.wait_until work, to run after the response is sent

    def response_then_pending(self, timeout_s: float) -> Response:
        """The response, with the wait_until work as its background task (Starlette runs it once sent)."""
        if not self.pending:
            return self.response
        after = BackgroundTask(run_after_response, self.name, self.request_id, self.pending, timeout_s)
        existing = self.response.background
        self.response.background = after if existing is None else _chain(existing, after)
        return self.response


def _chain(first: BackgroundTask, second: BackgroundTask) -> BackgroundTask:
    async def both() -> None:
        await first()
        await second()

    return BackgroundTask(both)


class FunctionRunner:
    def __init__(self, functions_dir: Path, ai: Any, *, timeout_s: float, reload: bool, max_threads: int = 16) -> None:
        self.functions_dir = functions_dir
        self._ai = ai
        self._timeout_s = timeout_s
        self._reload = reload
        self._importer = ModuleImporter(ai)
        self._cache: dict[str, LoadedFunction | _ImportFailure] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Its own threads: a hanging sync function must not starve the default executor (image decoding uses it).
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="function")

    def names(self) -> list[str]:
        return list_functions(self.functions_dir)

    async def invoke(self, name: str, request: Request, request_id: str) -> Invocation:
        source = find_function(self.functions_dir, name)
        if source is None:
            known = ", ".join(self.names()) or "none"
            raise FunctionNotFound(f"no function named {quote(name)}; functions: {known}")
        loaded = await self._loaded(source)
        env = Env(loaded.variables, self._ai)
        ctx = Context(request_id, loaded.args, name)
        try:
            result = await self._call(loaded, request, env, ctx)
            return Invocation(name, request_id, to_response(name, result), ctx.take_pending())
        except BaseException:
            ctx.discard_pending()
            raise

    async def _call(self, loaded: LoadedFunction, request: Request, env: Env, ctx: Context) -> Any:
        name = loaded.source.name
        deadline = asyncio.timeout(self._timeout_s)
        try:
            async with deadline:
                if loaded.is_async:
                    return await loaded.fetch(request, env, ctx)
                call = contextvars.copy_context().run
                return await asyncio.get_running_loop().run_in_executor(
                    self._threads, call, loaded.fetch, request, env, ctx
                )
        except TimeoutError as exc:
            if not deadline.expired():
                raise self._failed(name, "raised", exc) from None
            log.warning("function %r ran past its time limit of %g s and was cancelled", name, self._timeout_s)
            if not loaded.is_async:
                log.warning("function %r: its thread keeps running past the time limit until it returns", name)
            raise RequestTimeout(
                f"function {name!r} ran past its time limit of {self._timeout_s:g} s ({TIMEOUT_SETTING})"
            ) from None
        except RuntimeErrorBase as exc:
            exc.message = SECRETS.redact(exc.message)  # e.g. an image URL carrying a token, echoed in a message
            exc.args = (exc.message,)
            raise
        except (Exception, SystemExit) as exc:
            raise self._failed(name, "raised", exc) from None

    def _failed(self, name: str, verb: str, exc: BaseException) -> FunctionFailed:
        text = SECRETS.redact("".join(traceback.format_exception(exc)))
        log.error("function %r %s:\n%s", name, verb, text)
        return FunctionFailed(SECRETS.redact(f"function {name!r} {verb} {type(exc).__name__}: {exc}"))

    async def _loaded(self, source: FunctionSource) -> LoadedFunction:
        cached = self._cache.get(source.name)
        if cached is not None and not self._reload:
            return self._usable(source.name, cached)
        lock = self._locks.setdefault(source.name, asyncio.Lock())
        async with lock:
            loop = asyncio.get_running_loop()
            fingerprint = await loop.run_in_executor(self._threads, source.fingerprint)
            cached = self._cache.get(source.name)
            if cached is not None and cached.fingerprint == fingerprint:
                return self._usable(source.name, cached)
            reloading = cached is not None
            previous_module = cached.module.__name__ if isinstance(cached, LoadedFunction) else None
            del cached  # the cache alone holds the old version now, so that replacing it there frees it
            try:
                async with asyncio.timeout(self._timeout_s):
                    loaded = await loop.run_in_executor(
                        self._threads, self._importer.load, source, fingerprint, previous_module
                    )
            except TimeoutError:
                raise RequestTimeout(
                    f"function {source.name!r} took longer than {self._timeout_s:g} s to import ({TIMEOUT_SETTING})"
                ) from None
            except FunctionImportError as exc:
                failure = _ImportFailure(
                    fingerprint, SECRETS.redact(f"function {source.name!r} failed to import: {exc}")
                )
                self._cache[source.name] = failure
                cause = exc.__cause__ or exc
                log.error("%s\n%s", failure.message, SECRETS.redact("".join(traceback.format_exception(cause))))
                if previous_module is not None:
                    _forget_old_versions()
                raise FunctionFailed(failure.message) from None
            if reloading:
                log.info("function %r reloaded", source.name)
            self._cache[source.name] = loaded
            if previous_module is not None:
                _forget_old_versions()
            return loaded

    @staticmethod
    def _usable(name: str, cached: LoadedFunction | _ImportFailure) -> LoadedFunction:
        if isinstance(cached, _ImportFailure):
            log.error("%s (unchanged since; fix the file)", cached.message)
            raise FunctionFailed(cached.message)
        return cached

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


def _forget_old_versions() -> None:
    """Free what a replaced version held (its module state, a cache it filled ...) now, not at some later
    collection: a module and its functions hold each other (a function's globals are its module's dict), so only
    the cycle collector can free them. Reloads are rare; a full collection takes milliseconds."""
    gc.collect()


def to_response(name: str, result: Any) -> Response:
    """What a function may return: a Response, a dict or list (JSON), a str (text), bytes, or None (204)."""
    if isinstance(result, Response):
        return result
    if isinstance(result, (dict, list)):
        try:
            return JSONResponse(result)
        except (TypeError, ValueError) as exc:
            raise FunctionFailed(f"function {name!r} returned a dict that is not JSON-serialisable: {exc}") from None
    if isinstance(result, str):
        return PlainTextResponse(result)
    if isinstance(result, (bytes, bytearray)):
        return Response(bytes(result), media_type="application/octet-stream")
    if result is None:
        return Response(status_code=204)
    raise FunctionFailed(
        f"function {name!r} returned a {type(result).__name__}; return a Response, a dict (JSON) or a str"
    )
