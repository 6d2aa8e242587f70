"""The OpenAI-compatible API on the tiny model: the spec's curl request, the official SDK, and error statuses."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import openai
import pytest
from e2e_support import MAX_NEW_TOKENS, ImageServer
from fakes import data_url, image_bytes
from jsonschema import Draft202012Validator
from live_server import LiveServer, call

from runtime.openai.protocol import wire_schema

HUB_ID = "microsoft/Florence-2-large"


def spec_request(image_url: str, text: str = "<DETAILED_CAPTION>") -> dict[str, Any]:
    """The request of the spec's curl example, byte for byte but for the image URL."""
    return {
        "model": HUB_ID,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": text}],
            }
        ],
    }


def test_spec_curl_request(e2e_server: LiveServer, image_server: ImageServer) -> None:
    body = json.dumps(spec_request(f"{image_server.url}/photo.jpg"))
    completed = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{e2e_server.url}/v1/chat/completions", "-H", "Content-Type: application/json",
         "-d", body, "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    text, status = completed.stdout.rsplit("\n", 1)
    assert status == "200", text
    answer = json.loads(text)
    assert answer["object"] == "chat.completion" and answer["model"] == HUB_ID
    assert answer["id"].startswith("chatcmpl-") and isinstance(answer["created"], int)
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = answer["usage"]
    assert 0 < usage["completion_tokens"] <= MAX_NEW_TOKENS
    assert usage["prompt_tokens"] > 577  # 577 image tokens at 768x768, then the prompt
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert answer["result"] == {"<DETAILED_CAPTION>": choice["message"]["content"]}


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0, timeout=60)


def _messages(url: str, text: str) -> list[dict[str, Any]]:
    return spec_request(url, text)["messages"]


def test_openai_sdk_non_streaming_and_streaming_agree(e2e_server: LiveServer, image_server: ImageServer) -> None:
    client = _client(e2e_server)
    messages = _messages(f"{image_server.url}/photo.png", "<CAPTION>")
    completion = client.chat.completions.create(
        model=HUB_ID,
        messages=messages,
        max_tokens=8,
        extra_body={"num_beams": 1},  # type: ignore[arg-type]
    )
    content = completion.choices[0].message.content
    assert isinstance(content, str) and completion.usage is not None
    assert completion.usage.completion_tokens <= 8
    assert completion.model_extra is not None and completion.model_extra["result"] == {"<CAPTION>": content}
    stream = client.chat.completions.create(
        model=HUB_ID,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"num_beams": 1},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [completion.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_openai_sdk_structured_task_and_errors(e2e_server: LiveServer, image_server: ImageServer) -> None:
    client = _client(e2e_server)
    completion = client.chat.completions.create(
        model="microsoft-florence-2-large",
        messages=_messages(f"{image_server.url}/photo.jpg", "<OD>"),
        max_tokens=8,  # type: ignore[arg-type]
    )
    parsed = json.loads(completion.choices[0].message.content or "")
    assert set(parsed["<OD>"]) == {"bboxes", "labels"}
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=HUB_ID,
            messages=_messages(f"{image_server.url}/photo.jpg", "<OD>"),
            stream=True,  # type: ignore[arg-type]
        )
    assert bad.value.code == "stream_not_supported"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=_messages(f"{image_server.url}/photo.jpg", "<OD>"))  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    assert [m.id for m in client.models.list()] == ["microsoft-florence-2-large", HUB_ID]


@pytest.mark.parametrize(
    ("url_path", "text", "status", "code"),
    [
        ("/photo.jpg", "<PHRASE_GROUNDING>a car", 400, "invalid_payload"),
        ("/missing.jpg", "<CAPTION>", 400, "image_fetch_failed"),
        ("/page.html", "<CAPTION>", 415, "unsupported_media_type"),
    ],
)
def test_error_statuses(
    e2e_server: LiveServer, image_server: ImageServer, url_path: str, text: str, status: int, code: str
) -> None:
    reply = call(
        e2e_server.url, "POST", "/v1/chat/completions", json_body=spec_request(image_server.url + url_path, text)
    )
    assert reply.status == status and reply.error["code"] == code


def test_ssrf_guard_is_on_for_other_addresses(e2e_server: LiveServer) -> None:
    # 169.254.169.254 is refused before any connection is attempted.
    reply = call(
        e2e_server.url,
        "POST",
        "/v1/chat/completions",
        json_body=spec_request("http://169.254.169.254/latest/meta-data"),
    )
    assert reply.status == 400 and reply.error["code"] == "forbidden_address"


def test_413_image_and_body(e2e_server: LiveServer) -> None:
    big = data_url(image_bytes(size=(600, 600), fmt="BMP"), "image/bmp")  # 1 MB of pixels, over the 1 MB image limit
    reply = call(e2e_server.url, "POST", "/v1/chat/completions", json_body=spec_request(big))
    assert reply.status == 413 and reply.error["code"] == "payload_too_large"
    reply = call(
        e2e_server.url,
        "POST",
        "/v1/chat/completions",
        body=b"x" * 2_100_000,
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 413


def test_data_url_image(e2e_server: LiveServer) -> None:
    reply = call(
        e2e_server.url,
        "POST",
        "/v1/chat/completions",
        json_body={**spec_request(data_url(image_bytes())), "max_tokens": 4},
    )
    assert reply.status == 200 and reply.json()["usage"]["completion_tokens"] <= 4
    stages = dict(item.split(";dur=") for item in reply.headers["server-timing"].split(", "))
    assert set(stages) == {"queue", "preprocess", "vision", "encoder", "decode", "model"}
    model_ms = sum(float(stages[s]) for s in ("preprocess", "vision", "encoder", "decode"))
    assert float(stages["model"]) == pytest.approx(model_ms, abs=0.3) and float(stages["vision"]) > 0


def test_ignore_eos_over_http(e2e_server: LiveServer) -> None:
    """The option is accepted and checked on the real server. The random-weight model seldom emits EOS within a few
    tokens, so EOS being ignored is shown by the engine's search tests and the binding's, not here."""
    body = {**spec_request(data_url(image_bytes()), "<CAPTION>"), "max_tokens": 7, "ignore_eos": True}
    reply = call(e2e_server.url, "POST", "/v1/chat/completions", json_body=body)
    assert reply.status == 200
    answer = reply.json()
    assert answer["usage"]["completion_tokens"] == 7 and answer["choices"][0]["finish_reason"] == "length"
    reply = call(e2e_server.url, "POST", "/v1/chat/completions", json_body={**body, "ignore_eos": "yes"})
    assert reply.status == 400 and reply.error["code"] == "invalid_payload" and reply.error["param"] == "ignore_eos"


@pytest.mark.parametrize("text", ["<CAPTION>", "<OD>", "<OCR_WITH_REGION>", "<REFERRING_EXPRESSION_SEGMENTATION>a car"])
def test_answers_of_the_real_engine_match_the_wire_schema(
    e2e_server: LiveServer, image_server: ImageServer, text: str
) -> None:
    body = {**spec_request(f"{image_server.url}/photo.png", text), "max_tokens": 8}
    reply = call(e2e_server.url, "POST", "/v1/chat/completions", json_body=body)
    assert reply.status == 200, reply.body
    Draft202012Validator(wire_schema("ChatCompletion")).validate(reply.json())
    if text == "<CAPTION>":
        streamed = call(
            e2e_server.url, "POST", "/v1/chat/completions", json_body={**body, "stream": True}
        ).body.decode()
        events = [line.removeprefix("data: ") for line in streamed.split("\n\n") if line.startswith("data: {")]
        chunk = Draft202012Validator(wire_schema("ChatCompletionChunk"))
        assert events
        for event in events:
            chunk.validate(json.loads(event))
    models = call(e2e_server.url, "GET", "/v1/models").json()
    Draft202012Validator(wire_schema("ModelList")).validate(models)
