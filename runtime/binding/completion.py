"""The chat.completion and chat.completion.chunk objects, the same for AI.run and for HTTP.

Beyond the OpenAI fields, a completion carries ``result``: the parsed answer ``{"<TAG>": result}`` (a string for
text tasks; bboxes, labels, polygons ... in pixels of the original image for structured ones), so callers need not
parse ``choices[0].message.content``, which holds the text (text tasks) or the JSON of ``result`` (structured).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from runtime.engine.api import TaskResult


@dataclass(frozen=True)
class CompletionHeader:
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, model: str) -> CompletionHeader:
        return cls(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model)


def content_of(result: TaskResult, is_text: bool) -> str:
    if is_text:
        answer = result.parsed.get(result.task)
        return answer if isinstance(answer, str) else result.text
    return json.dumps(result.parsed, ensure_ascii=False, separators=(",", ":"))


def usage_of(result: TaskResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def completion(header: CompletionHeader, result: TaskResult, is_text: bool) -> dict[str, Any]:
    return {
        "id": header.id,
        "object": "chat.completion",
        "created": header.created,
        "model": header.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content_of(result, is_text)},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage_of(result),
        "result": result.parsed,
    }


def chunk(
    header: CompletionHeader,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One streamed chunk; ``delta=None`` makes the usage-only chunk that ends a stream with include_usage."""
    body: dict[str, Any] = {
        "id": header.id,
        "object": "chat.completion.chunk",
        "created": header.created,
        "model": header.model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body
