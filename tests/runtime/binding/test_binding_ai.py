"""AI.run over a fake engine: the chat.completion shape, streaming, limits, and errors before any work."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, data_url, image_bytes, payload

from runtime.binding import AIBinding, ModelRegistry
from runtime.binding.request import read_request
from runtime.config import Limits, MediaSettings
from runtime.errors import (
    InferenceFailed,
    ModelNotFound,
    SchemaViolation,
    StreamNotSupported,
    UnsupportedUrl,
)
from runtime.functions.helpers import ImageSource
from runtime.media import ImageLoader

MODEL = "microsoft-florence-2-large"


def _binding(engine: FakeEngine, limits: Limits | None = None, observed: list[Any] | None = None) -> AIBinding:
    registry = ModelRegistry()
    registry.add([MODEL], engine)
    on_result = (lambda model, result: observed.append(result)) if observed is not None else None
    return AIBinding(registry, ImageLoader(MediaSettings()), limits or Limits(), on_result=on_result)


async def test_caption_completion_shape() -> None:
    observed: list[Any] = []
    engine = FakeEngine()
    answer = await _binding(engine, observed=observed).run(MODEL, payload("<CAPTION>"))
    assert isinstance(answer, dict)
    assert answer["object"] == "chat.completion"
    assert answer["id"].startswith("chatcmpl-")
    assert answer["model"] == MODEL
    assert isinstance(answer["created"], int)
    choice = answer["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "a red image of 64 by 48 pixels"}
    assert choice["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}
    assert answer["result"] == {"<CAPTION>": "a red image of 64 by 48 pixels"}
    assert engine.requests[0].task == "<CAPTION>" and engine.requests[0].image.size == (64, 48)
    assert len(observed) == 1


async def test_structured_task_content_is_the_json_of_result() -> None:
    answer = await _binding(FakeEngine()).run(MODEL, payload("<OD>", url=data_url(image_bytes((0, 0, 255), (40, 20)))))
    assert isinstance(answer, dict)
    content = answer["choices"][0]["message"]["content"]
    assert json.loads(content) == answer["result"]
    assert answer["result"]["<OD>"]["bboxes"] == [[0, 0, 20, 20], [20, 0, 40, 20]]
    assert answer["result"]["<OD>"]["labels"][0] == "blue"


async def test_hub_form_of_the_id_answers_too() -> None:
    answer = await _binding(FakeEngine()).run("microsoft/Florence-2-large", payload())
    assert isinstance(answer, dict) and answer["model"] == "microsoft/Florence-2-large"


async def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ModelNotFound) as caught:
        await _binding(FakeEngine()).run("florence-3", payload())
    assert "microsoft-florence-2-large" in caught.value.message
    assert "microsoft/Florence-2-large" in caught.value.message
    assert caught.value.status == 404


async def test_task_input_reaches_the_engine() -> None:
    engine = FakeEngine()
    await _binding(engine).run(MODEL, payload("<REGION_TO_CATEGORY><loc_1><loc_2><loc_300><loc_400>"))
    assert engine.requests[0].task == "<REGION_TO_CATEGORY>"
    assert engine.requests[0].text_input == "<loc_1><loc_2><loc_300><loc_400>"


async def test_generation_options_reach_the_engine_within_limits() -> None:
    engine = FakeEngine()
    binding = _binding(engine, Limits(max_new_tokens=50, max_num_beams=3))
    answer = await binding.run(MODEL, payload(max_tokens=3, num_beams=2))
    assert isinstance(answer, dict)
    assert engine.requests[0].max_new_tokens == 3 and engine.requests[0].num_beams == 2
    assert answer["choices"][0]["finish_reason"] == "length"
    with pytest.raises(SchemaViolation) as caught:
        await binding.run(MODEL, payload(max_tokens=51))
    assert caught.value.param == "max_tokens" and "FLORENCE_MAX_NEW_TOKENS" in caught.value.message
    with pytest.raises(SchemaViolation) as caught:
        await binding.run(MODEL, payload(num_beams=4))
    assert caught.value.param == "num_beams"
    await binding.run(MODEL, payload(max_completion_tokens=4, max_tokens=9))
    assert engine.requests[-1].max_new_tokens == 4


async def test_ignore_eos_reaches_the_engine_and_is_off_by_default() -> None:
    engine = FakeEngine()
    binding = _binding(engine)
    await binding.run(MODEL, payload(max_tokens=5, ignore_eos=True))
    await binding.run(MODEL, payload(max_tokens=5, ignore_eos=False))
    await binding.run(MODEL, payload(max_tokens=5))
    stream = await binding.run(MODEL, payload(ignore_eos=True, stream=True))
    _ = [c async for c in stream]  # type: ignore[union-attr]
    assert [request.ignore_eos for request in engine.requests] == [True, False, False, True]
    assert engine.requests[0].max_new_tokens == 5


@pytest.mark.parametrize(("value", "shown"), [("yes", '"yes"'), (1, "1"), (None, "null"), ([True], "[true]")])
async def test_ignore_eos_must_be_true_or_false(value: object, shown: str) -> None:
    engine = FakeEngine()
    with pytest.raises(SchemaViolation) as caught:
        await _binding(engine).run(MODEL, payload(ignore_eos=value))
    error = caught.value
    assert error.param == "ignore_eos" and error.status == 400 and error.code == "invalid_payload"
    assert error.message == f"ignore_eos: expected true or false; got {shown}"
    assert engine.requests == []


def test_ignore_eos_is_not_among_the_ignored_fields() -> None:
    request = read_request(payload(ignore_eos=True, temperature=0.1))
    assert request.query.ignore_eos is True
    assert request.ignored_fields == ("temperature",)


async def test_unknown_fields_are_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="runtime.binding.request"):
        answer = await _binding(FakeEngine()).run(MODEL, payload(temperature=0.1, top_p=0.5))
    assert isinstance(answer, dict)
    assert "'temperature', 'top_p'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="runtime.binding.request"):
        await _binding(FakeEngine()).run(MODEL, payload(ignore_eos=True))
    assert "ignoring" not in caplog.text


async def test_stream_yields_role_deltas_finish_and_usage() -> None:
    binding = _binding(FakeEngine())
    stream = await binding.run(MODEL, payload(stream=True, stream_options={"include_usage": True}))
    chunks = [c async for c in stream]  # type: ignore[union-attr]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "a red image of 64 by 48 pixels"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


async def test_stream_of_structured_task_is_refused_before_any_work() -> None:
    engine = FakeEngine()
    with pytest.raises(StreamNotSupported) as caught:
        await _binding(engine).run(MODEL, payload("<OD>", stream=True))
    assert caught.value.status == 400 and caught.value.code == "stream_not_supported"
    assert engine.requests == []


async def test_engine_failure_before_the_first_chunk_is_raised_by_run() -> None:
    engine = FakeEngine()
    engine.fail_with = InferenceFailed("session raised")
    with pytest.raises(InferenceFailed):
        await _binding(engine).run(MODEL, payload(stream=True))


async def test_image_errors_name_the_url_path() -> None:
    with pytest.raises(UnsupportedUrl) as caught:
        await _binding(FakeEngine()).run(MODEL, payload(url="ftp://example.com/cat.png"))
    assert caught.value.param == "messages[0].content[0].image_url.url"


async def test_image_errors_name_the_functions_own_parameter() -> None:
    """A function's client sent ``?url=`` (or a body), not ``messages``: the error names what it sent."""
    url = ImageSource("ftp://example.com/cat.png", "url")
    with pytest.raises(UnsupportedUrl) as caught:
        await _binding(FakeEngine()).run(MODEL, payload(url=url))
    assert caught.value.param == "url"


async def test_image_part_may_come_second() -> None:
    document = payload()
    document["messages"][0]["content"].reverse()  # type: ignore[index]
    answer = await _binding(FakeEngine()).run(MODEL, document)
    assert isinstance(answer, dict)


async def test_run_sync_from_a_worker_thread() -> None:
    binding = _binding(FakeEngine())
    binding.bind_loop(asyncio.get_running_loop())
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(binding.run_sync(MODEL, payload())))
    thread.start()
    await asyncio.to_thread(thread.join)  # the loop stays free to serve the thread's request
    assert answers[0]["choices"][0]["message"]["content"] == "a red image of 64 by 48 pixels"
    with pytest.raises(RuntimeError, match=r"await AI\.run"):
        binding.run_sync(MODEL, payload())


async def test_the_engines_check_is_the_only_one_and_its_prompt_travels_with_the_request() -> None:
    engine = FakeEngine()
    binding = _binding(engine)
    await binding.run(MODEL, payload("<OPEN_VOCABULARY_DETECTION>a red thing", max_tokens=5))
    (request,) = engine.requests
    assert request.prompt_ids == engine.check(request)  # what check returned, handed on: not tokenised again
    assert (request.task, request.text_input, request.max_new_tokens) == (
        "<OPEN_VOCABULARY_DETECTION>",
        "a red thing",
        5,
    )


async def test_the_real_engine_tokenises_a_request_once(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.engine import load
    from runtime.engine.settings import EngineSettings

    engine = load(tiny_model_dir, EngineSettings(warmup=False, max_new_tokens=4))
    try:
        registry = ModelRegistry()
        registry.add([MODEL], engine)
        binding = AIBinding(registry, ImageLoader(MediaSettings()), Limits(max_new_tokens=4))
        tokenised: list[str] = []
        prompt_ids = engine.processor.prompt_ids

        def counting(task: str, text_input: str | None) -> list[int]:
            tokenised.append(task)
            return prompt_ids(task, text_input)

        monkeypatch.setattr(engine.processor, "prompt_ids", counting)
        answer = await binding.run(MODEL, payload("<CAPTION>", max_tokens=2))
        assert isinstance(answer, dict) and answer["usage"]["completion_tokens"] <= 2
        assert tokenised == ["<CAPTION>"]
        with pytest.raises(SchemaViolation, match="FLORENCE_MAX_NEW_TOKENS"):
            await binding.run(MODEL, payload("<CAPTION>", max_tokens=5))
    finally:
        await engine.close()
