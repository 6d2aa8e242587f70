"""The wire format has one owner: what the binding answers validates against the schema protocol derives from its
own shapes, for every task, streamed or not; and that schema is what /openapi.json publishes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fakes import FakeEngine, payload
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from runtime.binding import AIBinding, ModelRegistry
from runtime.config import Limits, MediaSettings, Settings
from runtime.florence2 import TASKS, get_task
from runtime.media import ImageLoader
from runtime.openai.protocol import NAMED_SHAPES, ChatCompletion, model_list, wire_schema, wire_schemas
from runtime.openai.typed_schema import schema_of
from runtime.server.openapi import openapi_document

MODEL = "microsoft-florence-2-large"
# Known to the engine but not offered by the request schema.
NOT_OFFERED = frozenset({"<REGION_TO_OCR>"})
TEXT_INPUT = {"region": "<loc_1><loc_2><loc_300><loc_400>", "text": "a red thing"}


def _binding() -> AIBinding:
    registry = ModelRegistry()
    registry.add([MODEL], FakeEngine())
    return AIBinding(registry, ImageLoader(MediaSettings()), Limits())


def _validator(name: str) -> Draft202012Validator:
    schema = wire_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _prompt(tag: str) -> str:
    kind = str(get_task(tag).input_kind)
    return tag + TEXT_INPUT.get(kind, "")


@pytest.mark.parametrize("tag", sorted(set(TASKS) - NOT_OFFERED))
async def test_every_tasks_completion_matches_the_schema(tag: str) -> None:
    answer = await _binding().run(MODEL, payload(text=_prompt(tag)))
    assert isinstance(answer, dict)
    _validator("ChatCompletion").validate(answer)
    assert list(answer["result"]) == [tag]


async def test_streamed_chunks_match_the_schema() -> None:
    stream = await _binding().run(MODEL, payload(text="<CAPTION>", stream=True, stream_options={"include_usage": True}))
    assert not isinstance(stream, dict)
    chunks = [chunk async for chunk in stream]
    validator = _validator("ChatCompletionChunk")
    for chunk in chunks:
        validator.validate(chunk)
    assert chunks[-1]["choices"] == [] and "usage" in chunks[-1]  # the usage-only chunk
    assert all("usage" not in chunk for chunk in chunks[:-1])


def test_the_model_list_matches_the_schema() -> None:
    listed = model_list(_binding().model_infos(), created=1)
    _validator("ModelList").validate(listed)
    assert {model["id"] for model in listed["data"]} == {MODEL, "microsoft/Florence-2-large"}


async def test_the_schema_refuses_an_answer_off_the_shape() -> None:
    answer = await _binding().run(MODEL, payload(text="<OD>"))
    assert isinstance(answer, dict)
    validator = _validator("ChatCompletion")
    for spoil in (
        lambda a: a.update(system_fingerprint="x"),  # closed objects: no field the shape does not name
        lambda a: a["choices"][0].update(finish_reason="eos"),
        lambda a: a["result"]["<OD>"]["bboxes"][0].pop(),  # a box has 4 numbers
        lambda a: a.update(result={"<OD>": {}, "<CAPTION>": "x"}),
        lambda a: a["usage"].update(total_tokens=-1),
    ):
        spoiled: Any = copy.deepcopy(answer)
        spoil(spoiled)
        with pytest.raises(ValidationError):
            validator.validate(spoiled)


def test_the_schema_is_derived_from_the_shapes() -> None:
    schemas = wire_schemas()
    assert {cls.__name__ for cls in NAMED_SHAPES} | {"TaskResult"} == set(schemas)
    completion = schemas["ChatCompletion"]
    assert completion["required"] == list(ChatCompletion.__annotations__)
    assert completion["properties"]["result"] == {"$ref": "#/components/schemas/TaskResult"}
    assert schemas["ChatCompletionChunk"]["required"] == ["id", "object", "created", "model", "choices"]
    assert schema_of(int | None) == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_openapi_publishes_protocols_schema() -> None:
    published = openapi_document(Settings())["components"]["schemas"]
    for name, schema in wire_schemas().items():
        assert published[name] == schema, name
    responses = openapi_document(Settings())["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
