from __future__ import annotations

import pytest
from fakes import FakeEngine

from runtime.binding.registry import ModelRegistry, id_forms
from runtime.errors import ModelNotFound


def test_id_forms() -> None:
    assert id_forms("microsoft-florence-2-large") == ("microsoft-florence-2-large", "microsoft/Florence-2-large")
    assert id_forms("microsoft/Florence-2-large") == ("microsoft/Florence-2-large", "microsoft-florence-2-large")
    assert id_forms("acme/Vision-1") == ("acme/Vision-1", "acme-vision-1")
    assert id_forms("my-model") == ("my-model",)


def test_a_folder_can_answer_to_more_ids() -> None:
    registry = ModelRegistry()
    engine = FakeEngine()
    model = registry.add(["microsoft-florence-2-large", "tiny"], engine)
    assert model.ids == ("microsoft-florence-2-large", "microsoft/Florence-2-large", "tiny")
    assert registry.get("tiny") is model and registry.get("microsoft/Florence-2-large") is model


def test_an_id_cannot_name_two_models() -> None:
    registry = ModelRegistry()
    registry.add(["a"], FakeEngine())
    with pytest.raises(ValueError, match="already registered"):
        registry.add(["a"], FakeEngine())


def test_unknown_id() -> None:
    registry = ModelRegistry()
    registry.add(["a", "b"], FakeEngine())
    with pytest.raises(ModelNotFound, match="known models: a, b") as caught:
        registry.get("c")
    assert caught.value.param == "model"


async def test_close_closes_every_engine() -> None:
    registry = ModelRegistry()
    engines = [FakeEngine("x"), FakeEngine("y")]
    registry.add(["x"], engines[0])
    registry.add(["y"], engines[1])
    await registry.close()
    assert all(engine.closed for engine in engines)
