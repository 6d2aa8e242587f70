"""Greedy generation through the four exported graphs with numpy and onnxruntime only.

The exporter's validation uses it as the ONNX side of the token-exact comparison with transformers' ``generate``.
It applies the checkpoint's forced BOS/EOS and no-repeat n-gram rules, as ``generate`` does with ``num_beams=1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from runtime.model_folder import DECODER, GRAPHS, file_name, past_names


class GraphSession(Protocol):
    """The part of ``onnxruntime.InferenceSession`` used here; tests wrap sessions to break them on purpose."""

    def get_inputs(self) -> Sequence[Any]: ...

    def get_outputs(self) -> Sequence[Any]: ...

    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class GreedyResult:
    tokens: np.ndarray  # [B, 1 + steps], starting with the decoder start token
    logits: np.ndarray  # [B, steps, V], raw decoder logits of each step (before the generation rules)


@dataclass(frozen=True)
class GenerationRules:
    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    forced_bos_token_id: int | None
    forced_eos_token_id: int | None
    no_repeat_ngram_size: int


def open_sessions(model_dir: Path, dtype: str = "fp32") -> dict[str, ort.InferenceSession]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return {
        graph: ort.InferenceSession(
            str(model_dir / "onnx" / file_name(graph, dtype)), options, providers=["CPUExecutionProvider"]
        )
        for graph in GRAPHS
    }


def run(session: GraphSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run with the inputs the graph declares (the exporter drops unused ones), outputs by name."""
    declared = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in declared}), strict=True))


def encode(
    sessions: Mapping[str, GraphSession],
    pixel_values: np.ndarray,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Image features followed by the embedded prompt, through the encoder; returns states and their mask."""
    features = run(sessions["vision_encoder"], {"pixel_values": pixel_values.astype(np.float32)})["image_features"]
    embeds = run(sessions["embed_tokens"], {"input_ids": input_ids.astype(np.int64)})["inputs_embeds"]
    inputs_embeds = np.concatenate([features, embeds], axis=1)
    mask = np.concatenate([np.ones(features.shape[:2], np.int64), attention_mask.astype(np.int64)], axis=1)
    states = run(sessions["encoder_model"], {"inputs_embeds": inputs_embeds, "attention_mask": mask})
    return states["last_hidden_state"], mask


def decoder_shape(session: GraphSession) -> tuple[int, int, int]:
    """(layers, heads, head_dim) read from the merged decoder's past inputs."""
    pasts = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    shape = pasts[0].shape
    return len(pasts) // 4, int(shape[1]), int(shape[3])


def generate(
    sessions: Mapping[str, GraphSession],
    encoder_states: np.ndarray,
    encoder_mask: np.ndarray,
    rules: GenerationRules,
    max_new_tokens: int,
) -> GreedyResult:
    """Greedy decoding with KV cache, stopping when every row has emitted EOS."""
    decoder = sessions[DECODER]
    embed = sessions["embed_tokens"]
    layers, heads, head_dim = decoder_shape(decoder)
    batch = encoder_states.shape[0]
    empty = np.zeros((batch, heads, 0, head_dim), np.float32)
    past = {name: empty for name in past_names(layers)}
    tokens = np.full((batch, 1), rules.decoder_start_token_id, np.int64)
    finished = np.zeros(batch, bool)
    max_length = 1 + max_new_tokens
    step_logits: list[np.ndarray] = []
    for step in range(max_new_tokens):
        step_ids = tokens[:, -1:]
        feeds = {
            "inputs_embeds": run(embed, {"input_ids": step_ids})["inputs_embeds"],
            "encoder_hidden_states": encoder_states,
            "encoder_attention_mask": encoder_mask,
            "use_cache_branch": np.array([step > 0]),
            **past,
        }
        out = run(decoder, feeds)
        for name in past:
            present = out[name.replace("past_key_values", "present")]
            if step == 0 or ".decoder." in name:  # the cached branch returns empty cross-attention KV: keep step 0's
                past[name] = present
        raw = out["logits"][:, -1, :].astype(np.float32)
        step_logits.append(raw)
        scores = _apply_rules(raw, tokens, rules, max_length)
        next_ids = np.where(finished, rules.pad_token_id, scores.argmax(-1))
        tokens = np.concatenate([tokens, next_ids[:, None]], axis=1)
        finished |= next_ids == rules.eos_token_id
        if finished.all():
            break
    return GreedyResult(tokens, np.stack(step_logits, axis=1))


def _apply_rules(scores: np.ndarray, tokens: np.ndarray, rules: GenerationRules, max_length: int) -> np.ndarray:
    cur_len = tokens.shape[1]
    scores = scores.copy()
    n = rules.no_repeat_ngram_size
    if n > 0 and cur_len + 1 >= n:
        for row in range(tokens.shape[0]):
            seq = tokens[row].tolist()
            prefix = tuple(seq[cur_len - n + 1 :])
            banned = {seq[i + n - 1] for i in range(cur_len - n + 1) if tuple(seq[i : i + n - 1]) == prefix}
            scores[row, list(banned)] = -np.inf
    if cur_len == 1 and rules.forced_bos_token_id is not None:
        scores[:] = -np.inf
        scores[:, rules.forced_bos_token_id] = 0
    if cur_len == max_length - 1 and rules.forced_eos_token_id is not None:
        scores[:] = -np.inf
        scores[:, rules.forced_eos_token_id] = 0
    return scores
