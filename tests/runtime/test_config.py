from __future__ import annotations

import dataclasses
import ipaddress
import sys
from pathlib import Path

import pytest

from runtime.cli import main, settings_table
from runtime.config import (
    ENGINE_MEANINGS,
    SETTINGS_DOC,
    Limits,
    MediaSettings,
    ModelSpec,
    RaySettings,
    ServerSettings,
    Settings,
    SettingsError,
    parse_models,
)
from runtime.engine.settings import EngineSettings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.models == (ModelSpec(ids=("microsoft-florence-2-large",), path=Path("models/tiny")),)
    assert settings.effective_engine.max_new_tokens == Limits().max_new_tokens


def test_environment_variables() -> None:
    settings = Settings.from_env(
        {
            "FLORENCE_PORT": "9000",
            "FLORENCE_RELOAD": "true",
            "FLORENCE_MAX_BODY_BYTES": "1_000",
            "FLORENCE_INVOCATION_TIMEOUT_S": "2.5",
            "FLORENCE_MAX_NEW_TOKENS": "64",
            "FLORENCE_IMAGE_ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128",
            "FLORENCE_MODELS": "a,b=models/x; c=models/y",
            "FLORENCE_ENGINE_VARIANT": "int8",
            "FLORENCE_ENGINE_IO_BINDING": "auto",
            "FLORENCE_ENGINE_BATCH_WAIT_MS": "2",
            "UNRELATED": "x",
        }
    )
    assert settings.server.port == 9000 and settings.server.reload is True
    assert settings.limits.max_body_bytes == 1000 and settings.limits.invocation_timeout_s == 2.5
    assert settings.media.allowed_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert settings.models == (ModelSpec(("a", "b"), Path("models/x")), ModelSpec(("c",), Path("models/y")))
    assert settings.engine.variant == "int8" and settings.engine.io_binding is None
    assert settings.engine.batch_wait_ms == 2.0
    assert settings.effective_engine.max_new_tokens == 64


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FLORENCE_PORT", "70000", "not a TCP port"),
        ("FLORENCE_MAX_QUEUED", "0", "at least 1"),
        ("FLORENCE_RELOAD", "maybe", "boolean"),
        ("FLORENCE_IMAGE_ALLOWED_NETWORKS", "localhost", "not a network"),
        ("FLORENCE_MODELS", "models/tiny", "ID[,ID...]=MODEL_DIR"),
        ("FLORENCE_ENGINE_VARIANT", "fp8", "variant must be one of"),
        ("FLORENCE_ENGINE_TURBO", "1", "unknown engine settings FLORENCE_ENGINE_TURBO"),
    ],
)
def test_bad_values_say_what_is_wrong(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Settings.from_env({name: value})


def test_an_id_cannot_point_at_two_folders() -> None:
    with pytest.raises(SettingsError, match="both"):
        parse_models(["a=models/x", "a=models/y"])


def test_flags_win_over_the_environment() -> None:
    settings = Settings.from_env({"FLORENCE_PORT": "9000"}).with_overrides(server={"port": 8080, "host": None})
    assert settings.server.port == 8080 and settings.server.host == "127.0.0.1"


def test_settings_table_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == settings_table()
    for doc in SETTINGS_DOC:
        assert f"`{doc.name}`" in printed


def test_missing_model_folder_is_a_clear_startup_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", f"x={tmp_path / 'none'}"]) == 2
    assert "make tiny" in capsys.readouterr().err


def test_ray_settings_from_the_environment_and_flags() -> None:
    settings = Settings.from_env(
        {"FLORENCE_RAY_REPLICAS": "2", "FLORENCE_RAY_MAX_REPLICAS": "4", "FLORENCE_RAY_REPLICA_GPUS": "0.5"}
    )
    assert settings.ray.enabled and settings.ray.replicas == 2 and settings.ray.max_replicas == 4
    assert settings.ray.replica_gpus == 0.5 and settings.ray.address == ""
    joined = settings.with_overrides(ray={"address": "10.0.0.5:6379", "replicas": None})
    assert joined.ray.address == "10.0.0.5:6379" and joined.ray.replicas == 2
    assert not Settings.from_env({}).ray.enabled  # without the flag: the direct server, no Ray
    with pytest.raises(SettingsError, match="below"):
        Settings.from_env({"FLORENCE_RAY_REPLICAS": "3", "FLORENCE_RAY_MAX_REPLICAS": "2"})
    with pytest.raises(SettingsError, match="0 or more"):
        Settings.from_env({"FLORENCE_RAY_REPLICA_CPUS": "-1"})


def test_ray_flags_are_checked_at_startup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text("{}")
    model = f"x={tmp_path}"
    assert main(["serve", "--model", model, "--ray-replicas", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["serve", "--model", model, "--ray-address", "127.0.0.1:6379"]) == 2
    assert "--ray-replicas" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as without the extra
    assert main(["serve", "--model", model, "--ray-replicas", "2"]) == 3
    assert "pip install -e '.[ray]'" in capsys.readouterr().err


def _sections() -> list[type]:
    return [ServerSettings, Limits, MediaSettings, RaySettings]


def test_every_setting_is_a_documented_field_whose_default_reads_back() -> None:
    documented = {(doc.section, doc.attr): doc for doc in SETTINGS_DOC}
    for cls, section in zip(_sections(), ("server", "limits", "media", "ray"), strict=True):
        for spec in dataclasses.fields(cls):
            assert (section, spec.name) in documented, f"{cls.__name__}.{spec.name} has no setting(...) metadata"
    names = [doc.name for doc in SETTINGS_DOC]
    assert len(names) == len(set(names)) and all(name.startswith("FLORENCE_") for name in names)
    defaults = Settings()
    for doc in SETTINGS_DOC:
        if doc.section == "engine" or doc.default in ("(none)",):
            continue
        value = defaults.models if doc.section == "models" else getattr(getattr(defaults, doc.section), doc.attr)
        read = Settings.from_env({doc.name: "" if doc.default == "auto" else doc.default})
        again = read.models if doc.section == "models" else getattr(getattr(read, doc.section), doc.attr)
        assert again == value, doc.name


def test_a_new_engine_field_needs_only_its_field_and_meaning() -> None:
    for doc in SETTINGS_DOC:
        if doc.section == "engine":
            assert doc.meaning in ENGINE_MEANINGS.values() or doc.meaning.startswith("engine: see"), doc.name
    engine_docs = {doc.attr for doc in SETTINGS_DOC if doc.section == "engine"}
    assert engine_docs == {f.name for f in dataclasses.fields(EngineSettings)} - {"max_new_tokens", "max_beams"}
    assert set(ENGINE_MEANINGS) <= engine_docs  # no meaning left for a field that is gone


def test_the_readme_table_is_the_printed_table() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert settings_table() in readme, "README.md's settings table differs: paste `python -m runtime settings`"
