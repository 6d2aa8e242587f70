from __future__ import annotations

from pathlib import Path

import pytest

from runtime.functions.discovery import find_function, list_functions
from runtime.functions.env import Env, read_env_files
from runtime.functions.secrets import MASK, SecretRegistry, is_secret_name


def test_discovery_forms(tmp_path: Path) -> None:
    (tmp_path / "single.py").write_text("")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "index.py").write_text("")
    (tmp_path / "_helper.py").write_text("")
    (tmp_path / "metrics.py").write_text("")  # shadowed by the server's own route
    (tmp_path / "notes").mkdir()
    single = find_function(tmp_path, "single")
    folder = find_function(tmp_path, "folder")
    assert single is not None and single.folder is None and single.entry == tmp_path / "single.py"
    assert single.env_files == (tmp_path / ".env", tmp_path / "single.env")
    assert folder is not None and folder.folder == tmp_path / "folder"
    assert folder.env_files == (tmp_path / ".env", tmp_path / "folder" / ".env")
    assert folder.args_file == tmp_path / "folder" / "args.json"
    for name in ("_helper", "metrics", "notes", "../single", "nothing"):
        assert find_function(tmp_path, name) is None
    assert list_functions(tmp_path) == ["folder", "single"]


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "index.py").write_text("x = 1")
    (tmp_path / "f" / "helper.py").write_text("y = 1")
    source = find_function(tmp_path, "f")
    assert source is not None
    before = source.fingerprint()
    (tmp_path / "f" / "helper.py").write_text("y = 2")
    after_helper = source.fingerprint()
    (tmp_path / ".env").write_text("A=1")
    assert len({before, after_helper, source.fingerprint()}) == 3


def test_env_files_merge_with_the_function_winning(tmp_path: Path) -> None:
    (tmp_path / "project.env").write_text("SHARED=project\nONLY_PROJECT=1\n")
    (tmp_path / "own.env").write_text("SHARED=function\nAPI_KEY=sk-live-123456\n")
    values = read_env_files((tmp_path / "project.env", tmp_path / "own.env", tmp_path / "absent.env"))
    assert values == {"SHARED": "function", "ONLY_PROJECT": "1", "API_KEY": "sk-live-123456"}


def test_env_access_and_repr() -> None:
    ai = object()
    env = Env({"GREETING": "hi", "API_KEY": "sk-live-123456"}, ai)
    assert env.AI is ai and env["AI"] is ai
    assert env.GREETING == "hi" and env["API_KEY"] == "sk-live-123456"
    assert dict(env)["GREETING"] == "hi"
    assert "sk-live" not in repr(env) and "API_KEY (secret)" in repr(env)
    assert env.secret_values() == ["sk-live-123456"]
    with pytest.raises(AttributeError, match="MISSING"):
        _ = env.MISSING
    with pytest.raises(AttributeError):
        env.GREETING = "changed"


@pytest.mark.parametrize(
    ("name", "secret"), [("API_KEY", True), ("db_password", True), ("GITHUB_TOKEN", True), ("GREETING", False)]
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_redaction() -> None:
    registry = SecretRegistry()
    registry.set("a", ["sk-live-123456", "abc"])  # too short to scrub
    registry.set("b", ["hunter22"])
    assert registry.redact("key sk-live-123456, pw hunter22, abc") == f"key {MASK}, pw {MASK}, abc"
    registry.set("b", [])
    assert registry.redact("pw hunter22") == "pw hunter22"
