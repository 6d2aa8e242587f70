"""Secrets never leave: not in error bodies, not in the server's output (its log, and what functions print).

The server runs as its own process, its stdout and stderr captured whole. Secrets come from the functions' .env
file and from the server's own environment; functions then do everything careless code does with them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hardening_procs import ServerProcess
from live_server import call
from waiting import wait_until

API_KEY = "sk-live-0123456789abcdef0123"
DB_PASSWORD = "correct-horse-battery-staple"
PROCESS_TOKEN = "proc-env-token-9f8e7d6c5b4a"
SECRETS = (API_KEY, DB_PASSWORD, PROCESS_TOKEN)
MASK = "[redacted]"

ENV_FILE = f"API_KEY={API_KEY}\nDB_PASSWORD={DB_PASSWORD}\nGREETING=hello there\n"

FUNCTIONS = {
    "raises.py": "async def fetch(request, env, ctx):\n    raise RuntimeError(f'auth failed with {env.API_KEY}')\n",
    "raises_in_thread.py": "def fetch(request, env, ctx):\n    raise KeyError(env.DB_PASSWORD)\n",
    "raises_nested.py": "def connect(dsn):\n    raise ConnectionError('cannot reach ' + dsn)\n"
    "async def fetch(request, env, ctx):\n"
    "    try:\n        connect('postgres://app:' + env.DB_PASSWORD + '@db')\n"
    "    except ConnectionError as exc:\n        raise RuntimeError('database down') from exc\n",
    "raises_process_secret.py": "import os\nasync def fetch(request, env, ctx):\n"
    "    raise RuntimeError('token ' + os.environ['SERVICE_TOKEN'])\n",
    "logs.py": "import logging\nasync def fetch(request, env, ctx):\n"
    "    logging.getLogger('user.code').error('connecting with %s', env.API_KEY)\n"
    "    try:\n        raise ValueError(env.DB_PASSWORD)\n"
    "    except ValueError:\n        logging.getLogger('user.code').exception('it failed')\n"
    "    return 'logged'\n",
    "prints.py": "import sys\nasync def fetch(request, env, ctx):\n"
    "    print('the key is', env.API_KEY)\n    print(env.DB_PASSWORD, file=sys.stderr)\n    return 'printed'\n",
    "later.py": "async def leak(secret):\n    raise RuntimeError('background job saw ' + secret)\n"
    "async def fetch(request, env, ctx):\n    ctx.wait_until(leak(env.API_KEY))\n    return 'later'\n",
    "echoes_through_ai.py": "async def fetch(request, env, ctx):\n"
    "    return await AI.run('microsoft-florence-2-large', {'messages': [{'role': 'user', 'content': [\n"
    "        {'type': 'image_url', 'image_url': {'url': 'not a url ' + env.API_KEY}},\n"
    "        {'type': 'text', 'text': '<CAPTION>'}]}]})\n",
    "import_fails.py": "from pathlib import Path\n"
    "raise RuntimeError('bad config: ' + Path(__file__).with_name('.env').read_text())\n"
    "async def fetch(request, env, ctx):\n    return 'never'\n",
    "greets.py": "async def fetch(request, env, ctx):\n    return env.GREETING\n",
}

CASES = [
    ("raises", 500),
    ("raises_in_thread", 500),
    ("raises_nested", 500),
    ("raises_process_secret", 500),
    ("logs", 200),
    ("prints", 200),
    ("later", 200),
    ("echoes_through_ai", 400),
    ("import_fails", 500),
]


@pytest.mark.timeout(120)
def test_secrets_stay_out_of_bodies_and_output(tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / ".env").write_text(ENV_FILE)
    for name, code in FUNCTIONS.items():
        (functions / name).write_text(code)
    env = {"FLORENCE_FUNCTIONS_DIR": str(functions), "SERVICE_TOKEN": PROCESS_TOKEN, "FLORENCE_LOG_LEVEL": "info"}
    with ServerProcess.fake_engine(env, tmp_path / "server.log") as server:
        bodies = {}
        for name, status in CASES:
            reply = call(server.url, "GET", f"/{name}")
            assert reply.status == status, (name, reply.body[:300])
            bodies[name] = reply.body.decode()
        assert call(server.url, "GET", "/greets").body == b"hello there"  # other variables are not touched
        wait_until(lambda: "background job saw" in server.log(), "the wait_until work, run after its response")
        server.terminate()
        server.wait(30)
        output = server.log()
    for name, body in bodies.items():
        for secret in SECRETS:
            assert secret not in body, (name, body)
        assert "Traceback" not in body, (name, body)
    for name in ("raises", "raises_in_thread", "raises_process_secret", "echoes_through_ai", "import_fails"):
        assert MASK in bodies[name], (name, bodies[name])
    for secret in SECRETS:
        assert secret not in output, f"a secret reached the server output:\n{output[-3000:]}"
    # The careless code did run, and what it wrote reached the output, masked.
    assert "connecting with [redacted]" in output and "the key is [redacted]" in output
    assert "background job saw [redacted]" in output and "cannot reach postgres://app:[redacted]@db" in output
