"""What one timed generation yields, the same for every contender.

Stages, in seconds:
- ``preprocess``: image and prompt to model inputs (resize, normalise, tokenise).
- ``vision_encoder``: pixels to image features (DaViT and projector).
- ``text_encoder``: token embedding and the BART encoder over image features and prompt.
- ``first_decode``: the first decoder step (it also projects the encoder output for cross-attention).
- ``per_token_decode``: the mean of every later step, the generation loop's own work (logits processors, beam
  bookkeeping) included.
``end_to_end`` is the whole call, from a decoded PIL image to the post-processed result; None for a contender that
runs one stage only (OpenVINO on the vision encoder graph).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bench.workload import Job

STAGES: tuple[str, ...] = ("preprocess", "vision_encoder", "text_encoder", "first_decode", "per_token_decode")


@dataclass(frozen=True)
class Measurement:
    stages: dict[str, float]
    end_to_end: float | None
    new_tokens: int  # tokens the chosen sequence holds, the decoder start excluded
    prompt_tokens: int  # what the encoder saw: image tokens and the prompt

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(
            stages={k: float(v) for k, v in data["stages"].items()},
            end_to_end=None if data["end_to_end"] is None else float(data["end_to_end"]),
            new_tokens=int(data["new_tokens"]),
            prompt_tokens=int(data["prompt_tokens"]),
        )


class Runner(Protocol):
    """One contender, loaded in its own process; ``run`` does one job and times its stages."""

    device_name: str  # where it computes: "cpu", "cuda", or the execution providers in use

    def warm_up(self) -> None: ...

    def run(self, job: Job) -> Measurement: ...


def per_token(decode_seconds: float, new_tokens: int) -> float:
    """Mean time of the steps after the first, given the time they took together."""
    return decode_seconds / max(1, new_tokens - 1)
