"""The encoder side: image features followed by the embedded prompt, through the text encoder.

Prompts of a batch are padded on the right, as transformers' tokenizer pads them, so that every request keeps
the positions it would have alone and the attention mask hides the padding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from runtime.engine.sessions import GraphRunner
from runtime.model_folder import EMBED_TOKENS, ENCODER, VISION_ENCODER


@dataclass(frozen=True)
class Encoded:
    hidden_states: np.ndarray  # [batch, image tokens + longest prompt, d_model]
    attention_mask: np.ndarray  # [batch, same] int64: 1 for image tokens and prompt tokens, 0 for padding
    prompt_tokens: tuple[int, ...]  # per request: image tokens + its own prompt tokens
    timings: dict[str, float] = field(default_factory=dict)


def pad_right(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt ids and their mask, [batch, longest], padded at the end."""
    longest = max(len(p) for p in prompts)
    ids = np.full((len(prompts), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), longest), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
        mask[row, : len(prompt)] = 1
    return ids, mask


def image_features(runner: GraphRunner, pixel_values: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Vision-encoder features [batch, image tokens, d_model], at most ``chunk`` images per run (None: all)."""
    step = chunk or len(pixel_values)
    parts = [
        runner.run(VISION_ENCODER, {"pixel_values": pixel_values[i : i + step]})[0]
        for i in range(0, len(pixel_values), step)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def encode_prompts(runner: GraphRunner, features: np.ndarray, prompts: Sequence[Sequence[int]], pad_id: int) -> Encoded:
    """The text encoder over each image's features followed by its embedded prompt."""
    started = time.perf_counter()
    ids, prompt_mask = pad_right(prompts, pad_id)
    (prompt_embeds,) = runner.run(EMBED_TOKENS, {"input_ids": ids})
    embeds = np.concatenate((features, prompt_embeds.astype(features.dtype, copy=False)), axis=1)
    mask = np.concatenate((np.ones(features.shape[:2], dtype=np.int64), prompt_mask), axis=1)
    (hidden,) = runner.run(ENCODER, {"inputs_embeds": embeds, "attention_mask": mask})
    image_tokens = features.shape[1]
    return Encoded(
        hidden_states=hidden,
        attention_mask=mask,
        prompt_tokens=tuple(image_tokens + len(p) for p in prompts),
        timings={"encoder": time.perf_counter() - started},
    )
