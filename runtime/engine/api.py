"""What the engine promises its callers: request and result shapes, and the Engine protocol.

The binding, the HTTP layer, benchmarks and tests depend on this module only, so a fake engine (tests) and the
ONNX Runtime engine are interchangeable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

from PIL import Image

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class TaskQuery:
    """What a request asks, without its image: callers have it checked (``Engine.check``) before fetching one.
    ``text_input`` is the region (``<loc_..>`` x4) or free text after the tag."""

    task: str
    text_input: str | None = None
    max_new_tokens: int | None = None  # None: the model's generation_config, capped by the engine's limit
    num_beams: int | None = None  # None: generation_config's num_beams
    ignore_eos: bool = False  # benchmarks: always generate max_new_tokens


@dataclass(frozen=True)
class TaskRequest(TaskQuery):
    """One image and one task."""

    image: Image.Image = field(kw_only=True)
    # The prompt as Engine.check tokenised it, so the engine does not tokenise it again; None: it does.
    prompt_ids: tuple[int, ...] | None = field(default=None, kw_only=True, compare=False, repr=False)

    @classmethod
    def of(cls, query: TaskQuery, image: Image.Image, prompt_ids: tuple[int, ...] | None = None) -> TaskRequest:
        return cls(**{f.name: getattr(query, f.name) for f in fields(TaskQuery)}, image=image, prompt_ids=prompt_ids)


@dataclass(frozen=True)
class TaskResult:
    task: str
    text: str  # the decoded generation, special tokens kept (what post-processing reads)
    parsed: dict[str, Any]  # {"<TAG>": str | dict}, coordinates in pixels of the original image
    token_ids: tuple[int, ...]  # generated ids, decoder start excluded
    prompt_tokens: int  # image tokens + prompt tokens the encoder saw
    completion_tokens: int
    finish_reason: FinishReason
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, for metrics and benchmarks
    batch_size: int = 1  # requests that shared the decoder batch


@dataclass(frozen=True)
class ModelInfo:
    name: str  # folder name
    path: str
    random_weights: bool  # outputs mean nothing; servers must say so loudly
    variant: str  # the variant setting, e.g. "fp32" or "fp16,decoder_model_merged=q4"
    providers: tuple[str, ...]  # ONNX Runtime execution providers in use
    graph_variants: tuple[tuple[str, str], ...] = ()  # (graph, variant loaded); fp32 where variant_fallback applied


class Engine(Protocol):
    info: ModelInfo

    def is_text_task(self, task: str) -> bool: ...

    def validate(self, request: TaskRequest) -> None:
        """Raise runtime.errors.InvalidTaskInput for a request that cannot run (cheap; before queueing)."""

    def check(self, query: TaskQuery) -> tuple[int, ...]:
        """``validate`` without the image, so callers refuse a bad request before fetching its image; the prompt's
        token ids, for ``TaskRequest.prompt_ids`` (the request is then tokenised once)."""

    async def run(self, request: TaskRequest) -> TaskResult: ...

    async def run_batch(self, requests: Sequence[TaskRequest]) -> list[TaskResult]: ...

    def stream(self, request: TaskRequest) -> AsyncIterator[str | TaskResult]:
        """Text deltas as tokens are decoded, then the final TaskResult. Text tasks only."""

    async def close(self) -> None: ...
