"""Invoking functions: results, failures that stay inside one request, hot reload, env, args, wait_until."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from runtime.errors import FunctionFailed, FunctionNotFound, ModelNotFound, RequestTimeout
from runtime.functions import FunctionRunner
from runtime.functions.context import run_after_response
from runtime.functions.secrets import MASK


class FakeAI:
    def __repr__(self) -> str:
        return "FakeAI"


def _request(path: str = "/f", method: str = "GET", query: bytes = b"") -> Request:
    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": query}
    return Request(scope)


def _runner(folder: Path, *, reload: bool = True, timeout_s: float = 2.0) -> FunctionRunner:
    return FunctionRunner(folder, FakeAI(), timeout_s=timeout_s, reload=reload, max_threads=4)


def _write(folder: Path, name: str, code: str) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(code)


async def _body(runner: FunctionRunner, name: str, **kwargs: Any) -> tuple[int, bytes, str]:
    invocation = await runner.invoke(name, _request(f"/{name}", **kwargs), "req-1")
    response = invocation.response
    return response.status_code, bytes(response.body), response.media_type or ""


@pytest.mark.parametrize(
    ("code", "status", "body", "media"),
    [
        ("return {'a': 1}", 200, b'{"a":1}', "application/json"),
        ("return [1, 2]", 200, b"[1,2]", "application/json"),
        ("return 'hello'", 200, b"hello", "text/plain"),
        ("return b'\\x00\\x01'", 200, b"\x00\x01", "application/octet-stream"),
        ("return None", 204, b"", ""),
        ("return HTMLResponse('<p>x</p>', status_code=201)", 201, b"<p>x</p>", "text/html"),
    ],
)
async def test_return_values(tmp_path: Path, code: str, status: int, body: bytes, media: str) -> None:
    _write(
        tmp_path,
        "f.py",
        f"from starlette.responses import HTMLResponse\nasync def fetch(request, env, ctx):\n    {code}\n",
    )
    assert await _body(_runner(tmp_path), "f") == (status, body, media)


async def test_odd_return_value_is_the_function_error(tmp_path: Path) -> None:
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx):\n    return 42\n")
    with pytest.raises(FunctionFailed, match="returned a int"):
        await _runner(tmp_path).invoke("f", _request(), "r")


async def test_ai_global_env_and_ctx(tmp_path: Path) -> None:
    _write(tmp_path, ".env", "SHARED=project\n")
    _write(tmp_path, "f/.env", "SHARED=function\n")
    _write(tmp_path, "f/args.json", '{"threshold": 0.5}')
    _write(
        tmp_path,
        "f/index.py",
        "from .helper import shout\n"
        "async def fetch(request, env, ctx):\n"
        "    return {'ai': repr(AI), 'same': env.AI is AI, 'shared': shout(env.SHARED), 'args': dict(ctx.args),\n"
        "            'id': ctx.request_id, 'q': request.query_params.get('q')}\n",
    )
    _write(tmp_path, "f/helper.py", "def shout(text):\n    return text.upper()\n")
    status, body, _ = await _body(_runner(tmp_path), "f", query=b"q=42")
    assert status == 200
    assert json.loads(body) == {
        "ai": "FakeAI",
        "same": True,
        "shared": "FUNCTION",
        "args": {"threshold": 0.5},
        "id": "req-1",
        "q": "42",
    }


async def test_sync_function_runs_in_a_worker_thread(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "f.py",
        "import threading\ndef fetch(request, env, ctx):\n    return threading.current_thread().name\n",
    )
    status, body, _ = await _body(_runner(tmp_path), "f")
    assert status == 200 and body.startswith(b"function") and threading.current_thread().name != body.decode()


async def test_raising_function_fails_its_request_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, ".env", "API_KEY=sk-live-abcdef\n")
    _write(tmp_path, "bad.py", "async def fetch(request, env, ctx):\n    raise ValueError('key is ' + env.API_KEY)\n")
    _write(tmp_path, "good.py", "async def fetch(request, env, ctx):\n    return 'fine'\n")
    runner = _runner(tmp_path)
    with caplog.at_level(logging.ERROR), pytest.raises(FunctionFailed) as caught:
        await runner.invoke("bad", _request(), "r")
    assert caught.value.status == 500 and caught.value.code == "function_error"
    assert "ValueError" in caught.value.message and MASK in caught.value.message
    assert "sk-live-abcdef" not in caught.value.message
    assert "Traceback" in caplog.text and "bad.py" in caplog.text and "sk-live-abcdef" not in caplog.text
    assert (await _body(runner, "good"))[:2] == (200, b"fine")


async def test_runtime_errors_keep_their_status(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "f.py",
        "from runtime.errors import ModelNotFound\n"
        "async def fetch(request, env, ctx):\n    raise ModelNotFound('no such model')\n",
    )
    with pytest.raises(ModelNotFound):
        await _runner(tmp_path).invoke("f", _request(), "r")


@pytest.mark.parametrize(
    "code",
    [
        "import asyncio\nasync def fetch(request, env, ctx):\n    await asyncio.sleep(60)\n",
        "import time\ndef fetch(request, env, ctx):\n    time.sleep(1.5)\n",
    ],
    ids=["async", "sync"],
)
async def test_hanging_function_times_out(tmp_path: Path, code: str) -> None:
    _write(tmp_path, "slow.py", code)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RequestTimeout) as caught:
        await _runner(tmp_path, timeout_s=0.3).invoke("slow", _request(), "r")
    assert caught.value.status == 408 and "FLORENCE_INVOCATION_TIMEOUT_S" in caught.value.message
    assert loop.time() - started < 1.0


async def test_timeout_error_raised_by_the_function_is_not_a_deadline(tmp_path: Path) -> None:
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx):\n    raise TimeoutError('upstream')\n")
    with pytest.raises(FunctionFailed, match="TimeoutError"):
        await _runner(tmp_path).invoke("f", _request(), "r")


async def test_system_exit_does_not_stop_the_server(tmp_path: Path) -> None:
    _write(tmp_path, "f.py", "import sys\nasync def fetch(request, env, ctx):\n    sys.exit(3)\n")
    with pytest.raises(FunctionFailed, match="SystemExit"):
        await _runner(tmp_path).invoke("f", _request(), "r")


async def test_import_failure_then_fix_with_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx)\n    return 'x'\n")
    runner = _runner(tmp_path)
    with caplog.at_level(logging.ERROR), pytest.raises(FunctionFailed, match="failed to import: SyntaxError"):
        await runner.invoke("f", _request(), "r")
    assert "Traceback" in caplog.text
    with pytest.raises(FunctionFailed, match="failed to import"):  # cached: not re-run until the file changes
        await runner.invoke("f", _request(), "r")
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx):\n    return 'fixed'\n")
    assert (await _body(runner, "f"))[1] == b"fixed"


async def test_module_level_error_and_missing_fetch(tmp_path: Path) -> None:
    _write(tmp_path, "boom.py", "raise RuntimeError('at import')\n")
    _write(tmp_path, "nofetch.py", "def handler(request):\n    pass\n")
    runner = _runner(tmp_path)
    with pytest.raises(FunctionFailed, match="RuntimeError: at import"):
        await runner.invoke("boom", _request(), "r")
    with pytest.raises(FunctionFailed, match="defines no fetch"):
        await runner.invoke("nofetch", _request(), "r")


async def test_hot_reload_of_module_helper_and_env(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "f/index.py",
        "from .helper import VALUE\nasync def fetch(request, env, ctx):\n    return f'{VALUE} {env.get(\"X\")}'\n",
    )
    _write(tmp_path, "f/helper.py", "VALUE = 'one'\n")
    runner = _runner(tmp_path)
    assert (await _body(runner, "f"))[1] == b"one None"
    _write(tmp_path, "f/helper.py", "VALUE = 'two'\n")
    assert (await _body(runner, "f"))[1] == b"two None"
    _write(tmp_path, "f/.env", "X=three\n")
    assert (await _body(runner, "f"))[1] == b"two three"


async def test_without_reload_the_first_version_stays(tmp_path: Path) -> None:
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx):\n    return 'one'\n")
    runner = _runner(tmp_path, reload=False)
    assert (await _body(runner, "f"))[1] == b"one"
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx):\n    return 'two'\n")
    assert (await _body(runner, "f"))[1] == b"one"


async def test_bad_args_json(tmp_path: Path) -> None:
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx):\n    return 'x'\n")
    _write(tmp_path, "f.args.json", "[1, 2")
    with pytest.raises(FunctionFailed, match="not valid JSON"):
        await _runner(tmp_path).invoke("f", _request(), "r")


async def test_unknown_function(tmp_path: Path) -> None:
    _write(tmp_path, "known.py", "async def fetch(request, env, ctx):\n    return 'x'\n")
    with pytest.raises(FunctionNotFound, match="functions: known") as caught:
        await _runner(tmp_path).invoke("unknown", _request(), "r")
    assert caught.value.status == 404


async def test_wait_until_runs_after_and_failures_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(
        tmp_path,
        "f.py",
        "import asyncio, pathlib\n"
        "async def later(value):\n    await asyncio.sleep(0)\n"
        "    pathlib.Path(__file__).with_name('done').write_text(value)\n"
        "async def broken():\n    raise KeyError('later')\n"
        "async def fetch(request, env, ctx):\n"
        "    ctx.wait_until(later('yes'))\n    ctx.waitUntil(broken())\n    return {'done': False}\n",
    )
    invocation = await _runner(tmp_path).invoke("f", _request(), "r")
    assert json.loads(bytes(invocation.response.body)) == {"done": False}
    assert not (tmp_path / "done").exists()
    assert len(invocation.pending) == 2
    with caplog.at_level(logging.ERROR):
        await run_after_response("f", "r", invocation.pending, 1.0)
    assert (tmp_path / "done").read_text() == "yes"
    assert "KeyError" in caplog.text


async def test_wait_until_rejects_what_cannot_be_awaited(tmp_path: Path) -> None:
    _write(tmp_path, "f.py", "async def fetch(request, env, ctx):\n    ctx.wait_until(42)\n")
    with pytest.raises(FunctionFailed, match="awaitable"):
        await _runner(tmp_path).invoke("f", _request(), "r")
