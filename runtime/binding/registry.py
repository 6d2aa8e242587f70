"""Model ids to loaded engines. Each model answers to its ids in both spellings the platform uses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runtime.engine.api import Engine
from runtime.errors import ModelNotFound
from runtime.untrusted import quote

# The platform names a model in AI.run in one form and in the HTTP API's "model" field in the hub form.
PLATFORM_TO_HUB: dict[str, str] = {
    "microsoft-florence-2-large": "microsoft/Florence-2-large",
    "microsoft-florence-2-base": "microsoft/Florence-2-base",
}


def id_forms(model_id: str) -> tuple[str, ...]:
    """``model_id`` and its other spelling: ``org/Name`` <-> ``org-name``."""
    if "/" in model_id:
        return (model_id, model_id.replace("/", "-").lower())
    hub = PLATFORM_TO_HUB.get(model_id)
    return (model_id, hub) if hub else (model_id,)


@dataclass(frozen=True)
class RegisteredModel:
    ids: tuple[str, ...]
    engine: Engine
    load_s: float | None = None  # seconds its folder took to load and warm up


class ModelRegistry:
    def __init__(self) -> None:
        self._by_id: dict[str, RegisteredModel] = {}
        self._models: list[RegisteredModel] = []

    def add(self, ids: Iterable[str], engine: Engine, load_s: float | None = None) -> RegisteredModel:
        expanded = tuple(dict.fromkeys(form for model_id in ids for form in id_forms(model_id)))
        taken = [model_id for model_id in expanded if model_id in self._by_id]
        if taken:
            raise ValueError(f"model ids already registered: {', '.join(taken)}")
        model = RegisteredModel(ids=expanded, engine=engine, load_s=load_s)
        self._models.append(model)
        for model_id in expanded:
            self._by_id[model_id] = model
        return model

    def get(self, model_id: str) -> RegisteredModel:
        model = self._by_id.get(model_id)
        if model is None:
            known = ", ".join(self.ids()) or "(none loaded)"
            raise ModelNotFound(f"unknown model {quote(model_id)}; known models: {known}", param="model")
        return model

    def ids(self) -> list[str]:
        return list(self._by_id)

    def models(self) -> list[RegisteredModel]:
        return list(self._models)

    async def close(self) -> None:
        for model in self._models:
            await model.engine.close()
