"""Every command and snippet of README.md and functions/README.md, run as printed against the tiny model.

The fenced ``sh``/``bash`` and ``python`` blocks are read from the Markdown. A block runs unless an HTML comment on
the line before it says otherwise:

- ``<!-- snippet: server (why) -->``: the block starts the server (``make serve``); it is run in the background on a
  free port with the suite's tiny model, and the other blocks run once ``/readyz`` answers 200;
- ``<!-- snippet: servers (why) -->``: each line is ``VAR=... make serve``, a configuration of the server; each is
  started as the quick start's is, answers a completion, logs what it chose, and stops with exit 0;
- ``<!-- snippet: skip (why) -->``: the block cannot run here (the hub, a Ray cluster, the suite itself); the
  reason is required, and test_every_block_runs_or_says_why_not holds every block to it.

Commands run from a scratch folder that holds what the README's reader has in the repository's folder (``docs/``,
``functions/`` and a copy of the tiny model as ``models/tiny``), with ``.venv/bin/python`` standing for the
interpreter running the tests and the README's port 8000 for the server's. A shell block fails on any command's
non-zero exit (``bash -e -o pipefail``) or an error envelope in its output; a Python block on its exit status. A
``python`` block that starts with ``# functions/NAME.py`` is a function: it is invoked with ``python -m runtime
invoke NAME --image docs/sample.jpg``, and linted as ``make lint`` would lint it in ``functions/``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "functions/README.md")
RUNNABLE = ("sh", "bash", "python")
README_PORT = 8000
_FENCE = re.compile(r"^\s*```(?P<lang>[\w-]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*snippet:\s*(?P<kind>\w+)\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
_FUNCTION = re.compile(r"#\s*functions/(?P<name>\w+)\.py\b")
_ERROR_ENVELOPE = re.compile(r'"error"\s*:\s*\{')


@dataclass(frozen=True)
class Block:
    document: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    directive: str | None  # server, skip, or None: run
    reason: str

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"

    @property
    def function_name(self) -> str | None:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        found = _FUNCTION.match(first) if self.lang == "python" else None
        return found["name"] if found else None


def read_blocks(document: str) -> list[Block]:
    lines = (REPO / document).read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next(
            i for i in range(index + 1, len(lines)) if _FENCE.match(lines[i]) and not _FENCE.match(lines[i])["lang"]
        )
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        directive = _DIRECTIVE.match(previous)
        blocks.append(
            Block(
                document=document,
                line=index + 1,
                lang=fence["lang"],
                code="\n".join(lines[index + 1 : end]) + "\n",
                directive=directive["kind"] if directive else None,
                reason=(directive["reason"] or "").strip() if directive else "",
            )
        )
        index = end + 1
    return blocks


def runnable_blocks() -> list[Block]:
    return [b for d in DOCUMENTS for b in read_blocks(d) if b.lang in RUNNABLE and b.directive is None]


def _directives(document: str) -> list[tuple[int, str]]:
    lines = (REPO / document).read_text().splitlines()
    return [(i + 1, line) for i, line in enumerate(lines) if "snippet:" in line and line.strip().startswith("<!--")]


# --- the Markdown's own rules (fast) ---------------------------------------------------------------------------


def test_every_block_runs_or_says_why_not() -> None:
    blocks = [b for d in DOCUMENTS for b in read_blocks(d)]
    assert len([b for b in blocks if b.lang in RUNNABLE]) >= 10, "the parser found too few blocks"
    for block in blocks:
        if block.directive is not None:
            known = ("skip", "server", "servers")
            assert block.directive in known, f"{block.where}: unknown directive {block.directive!r}"
            assert len(block.reason) >= 10, f"{block.where}: a {block.directive} directive needs its reason"
            assert block.lang in RUNNABLE, f"{block.where}: a directive on a block that would not run anyway"
        if block.lang not in RUNNABLE:
            # a block without a language is a diagram or a log; one that holds a command would escape this test
            assert block.lang in ("", "text", "json"), f"{block.where}: unknown language {block.lang!r}"
            assert not re.search(r"^\s*(\.venv/bin/|python|curl |make )", block.code, re.M), block.where
    assert sum(b.directive == "server" for b in blocks) == 1, "one block starts the server the others talk to"


def test_every_directive_stands_before_a_block() -> None:
    for document in DOCUMENTS:
        lines = (REPO / document).read_text().splitlines()
        for number, line in _directives(document):
            assert _DIRECTIVE.match(line), f"{document}:{number}: malformed directive {line!r}"
            following = next((text for text in lines[number:] if text.strip()), "")
            assert _FENCE.match(following), f"{document}:{number}: no code block follows the directive"


def test_the_parser_sees_a_skip_without_reason() -> None:
    """Negative control: a skip without its reason is read as such, so the rule above can fail."""
    assert _DIRECTIVE.match("<!-- snippet: skip -->")["reason"] is None
    assert _DIRECTIVE.match("<!-- snippet: skip (needs the hub) -->")["reason"] == "needs the hub"


def _ruff(args: list[str], source: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], input=source, capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_the_functions_the_readme_shows_pass_make_lint() -> None:
    functions = [b for b in runnable_blocks() if b.function_name]
    assert functions, "README.md shows a function"
    for block in functions:
        as_file = f"functions/{block.function_name}.py"  # linted where make lint would find the saved file
        checked = _ruff(["check", "--stdin-filename", as_file, "-"], block.code)
        assert checked.returncode == 0, f"{block.where}: {checked.stdout}{checked.stderr}"
        formatted = _ruff(["format", "--check", "--stdin-filename", as_file, "-"], block.code)
        assert formatted.returncode == 0, f"{block.where}: not formatted as ruff format would: {formatted.stdout}"


def test_ai_is_a_builtin_in_functions_only() -> None:
    """Negative controls: an undefined name in a function, and AI outside functions/, are still F821."""
    code = "async def fetch(request, env, ctx):\n    return await AI.run(MODEL, {})\n"
    in_functions = _ruff(["check", "--stdin-filename", "functions/probe.py", "-"], code)
    assert in_functions.returncode == 1 and "`MODEL`" in in_functions.stdout and "`AI`" not in in_functions.stdout
    elsewhere = _ruff(["check", "--stdin-filename", "runtime/probe.py", "-"], code)
    assert elsewhere.returncode == 1 and "`AI`" in elsewhere.stdout


# --- running them (slow) ----------------------------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Reader:
    """What a README reader has: a folder to run commands from, and the server of the quick start."""

    folder: Path
    port: int
    model_dir: Path

    def env(self) -> dict[str, str]:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "PYTHONPATH": str(REPO), "PATH": path, "FLORENCE_LOG_LEVEL": "warning"}

    def as_printed(self, code: str) -> str:
        """The block with the reader's interpreter and the server's port in place of .venv's and 8000."""
        return code.replace(".venv/bin/python", sys.executable).replace(f":{README_PORT}", f":{self.port}")


def _server_block() -> Block:
    return next(b for d in DOCUMENTS for b in read_blocks(d) if b.directive == "server")


@contextmanager
def make_serve(model_dir: Path, log_path: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """``make serve`` of the README on a free port with ``model_dir`` and ``env`` (the line's variables), ready;
    afterwards a SIGTERM to the server must end it and make with exit 0. Yields the port."""
    port = _free_port()
    venv = Path(sys.prefix)
    # the venv running the tests stands for .venv: it is installed already, so its stamps are taken as up to date
    make = [
        "make", "-o", f"{venv}/.installed-serve", "-o", f"{venv}/bin/python", "serve",
        f"VENV={venv}", f"MODEL_DIR={model_dir}", f"PORT={port}",
    ]  # fmt: skip
    log = log_path.open("w")
    server = subprocess.Popen(
        make, cwd=REPO, env={**os.environ, "FLORENCE_LOG_LEVEL": "warning", **(env or {})}, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if _get(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "make serve was not ready in time"
            time.sleep(0.1)
        yield port
        # a SIGTERM to the server ends `make serve` cleanly: the server drains and exits 0, and so does make
        children = _children(server.pid)
        assert len(children) == 1, f"make serve runs the server as its own child (exec): {children}"
        os.kill(children[0], signal.SIGTERM)
        assert server.wait(60) == 0, log_path.read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def reader(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    folder = tmp_path_factory.mktemp("reader")
    (folder / "docs").symlink_to(REPO / "docs")
    (folder / "functions").symlink_to(REPO / "functions")
    # a copy: the README's export block replaces models/tiny (--force), which must not touch the suite's cache
    shutil.copytree(tiny_model_dir, folder / "models" / "tiny")
    command = _server_block().code.split("#", 1)[0].strip()
    assert command == "make serve", f"the quick start's server command changed: {command!r}"
    with make_serve(tiny_model_dir, folder / "server.log") as port:
        yield Reader(folder, port, tiny_model_dir)


def server_lines() -> list[tuple[Block, dict[str, str]]]:
    """Each ``make serve`` line of the ``servers`` blocks, with the variables it sets."""
    found = []
    for block in (b for d in DOCUMENTS for b in read_blocks(d) if b.directive == "servers"):
        for line in block.code.splitlines():
            words = shlex.split(line.split("#", 1)[0])
            if not words:
                continue
            assignments = list(itertools.takewhile(lambda word: "=" in word, words))
            env = dict(word.split("=", 1) for word in assignments)
            command = words[len(assignments) :]
            assert command == ["make", "serve"], f"{block.where}: a servers block holds `VAR=... make serve` lines"
            found.append((block, env))
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("block", "env"), server_lines(), ids=lambda v: v.where if isinstance(v, Block) else " ".join(sorted(v))
)
def test_the_server_line_serves_as_printed(
    block: Block, env: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The line's configuration serves a completion over HTTP, logs what it chose, and stops cleanly."""
    log_path = tmp_path / "server.log"
    image = base64.b64encode((REPO / "docs" / "sample.jpg").read_bytes()).decode()
    payload = {
        "model": "microsoft-florence-2-large",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
                    {"type": "text", "text": "<CAPTION>"},
                ],
            }
        ],
    }
    with make_serve(tiny_model_dir, log_path, {**env, "FLORENCE_LOG_LEVEL": "info"}) as port:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            answer = json.loads(reply.read())
        assert answer["choices"][0]["message"]["content"] is not None
    log = log_path.read_text()
    if env.get("FLORENCE_ENGINE_VARIANT") == "fastest":
        assert "variant fastest chose backend" in log, log[-3000:]
    if env.get("FLORENCE_ENGINE_BACKEND") == "openvino":
        assert "backend openvino" in log, log[-3000:]


def _children(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children()]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda block: block.where)
def test_the_block_runs_as_printed(block: Block, reader: Reader) -> None:
    if block.function_name:
        _run_function(block, reader)
    elif block.lang == "python":
        script = reader.folder / f"snippet_{block.document.replace('/', '_')}_{block.line}.py"
        script.write_text(reader.as_printed(block.code))
        completed = subprocess.run(
            [sys.executable, script.name],
            cwd=reader.folder,
            env=reader.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert completed.returncode == 0, f"{block.where}:\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
    else:
        failure = shell_failure(reader.as_printed(block.code), reader.folder, reader.env())
        assert failure is None, f"{block.where}: {failure}"


def shell_failure(code: str, folder: Path, env: dict[str, str]) -> str | None:
    """Why a shell block failed (a command's exit status, or an error envelope in what it printed), or None."""
    completed = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    output = (completed.stdout + completed.stderr)[-3000:]
    if completed.returncode != 0:
        return f"exit status {completed.returncode}:\n{output}"
    if _ERROR_ENVELOPE.search(completed.stdout):
        return f"answered an error:\n{output}"
    return None


def test_a_failing_shell_block_is_seen(tmp_path: Path) -> None:
    """Negative controls for the shell runner: a failing command mid-block, a failing pipe, an error answer."""
    env = dict(os.environ)
    assert shell_failure("true\necho ok", tmp_path, env) is None
    assert "exit status 1" in (shell_failure("false\necho after", tmp_path, env) or "")
    assert "exit status" in (shell_failure("false | cat", tmp_path, env) or "")
    envelope = """echo '{"error": {"message": "no such function", "code": "function_not_found"}}'"""
    assert "answered an error" in (shell_failure(envelope, tmp_path, env) or "")


def _run_function(block: Block, reader: Reader) -> None:
    """Saved where its first line says (in a functions folder of its own) and invoked with the sample image."""
    folder = reader.folder / f"functions-{block.line}"
    folder.mkdir(exist_ok=True)
    (folder / f"{block.function_name}.py").write_text(block.code)
    completed = subprocess.run(
        [sys.executable, "-m", "runtime", "invoke", str(block.function_name), "--functions", str(folder),
         "--model", f"microsoft-florence-2-large={reader.model_dir}", "--image", "docs/sample.jpg"],
        cwd=reader.folder, env=reader.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0 and "HTTP 200" in completed.stderr, f"{block.where}:\n{completed.stderr[-3000:]}"


@pytest.mark.slow
def test_models_root_is_the_folder_name_the_readme_describes(reader: Reader) -> None:
    models = json.loads(_get(reader.port, "/v1/models")[1])["data"]
    assert {m["root"] for m in models} == {reader.model_dir.name}
    readme = (REPO / "README.md").read_text()
    assert "`root` (the model folder's name" in readme
