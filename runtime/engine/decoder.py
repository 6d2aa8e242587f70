"""One decoder step at a time over ``decoder_model_merged``, holding the KV cache between steps.

The first step runs the no-cache branch (``use_cache_branch`` False, empty past) and returns the
cross-attention KV, which stays fixed afterwards; later steps feed one token per row and grow the
self-attention KV. Rows are hypotheses: ``select`` reorders them by index (beam search) or drops
finished ones, and copies nothing when the order is unchanged.

With IO binding (on by default with CUDA) the cache stays on the device between steps; only a reorder or a
change of requests brings it to the host and back, so greedy decoding of one batch never copies it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.engine.sessions import DECODER, EMBED_TOKENS, GraphRunner, Sessions

_PAST = re.compile(r"past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)")


class OrtDecoder:
    def __init__(self, runner: GraphRunner, encoder_states: np.ndarray, encoder_mask: np.ndarray) -> None:
        self.runner = runner
        specs = runner.inputs(DECODER)
        self.past_names = [name for name in specs if _PAST.fullmatch(name)]
        self.self_names = [name for name in self.past_names if ".decoder." in name]
        self.present = {name: "present" + name[len("past_key_values") :] for name in self.past_names}
        self.past_specs = {name: specs[name] for name in self.past_names}
        # IO binding needs the real sessions; a wrapped runner (tests) always takes the host path.
        self.bound_graph = runner.graph(DECODER) if isinstance(runner, Sessions) and runner.io_binding else None
        self.bound = self.bound_graph is not None
        self.device = runner.device
        self.device_id = runner.device_id if isinstance(runner, Sessions) else 0
        self.states: Any = self._to_device(encoder_states.astype(_dtype(specs, "encoder_hidden_states"), copy=False))
        self.mask: Any = self._to_device(encoder_mask.astype(_dtype(specs, "encoder_attention_mask"), copy=False))
        self.cache: dict[str, Any] = {}
        self.rows = encoder_states.shape[0]

    def start(self, token_ids: np.ndarray) -> np.ndarray:
        """First step: one token per row (the decoder start); returns float32 logits [rows, vocab]."""
        rows = len(token_ids)
        empty = {name: np.zeros(_empty_shape(spec.shape, rows), spec.dtype) for name, spec in self.past_specs.items()}
        return self._run(token_ids, False, empty, self.past_names)

    def step(self, token_ids: np.ndarray) -> np.ndarray:
        return self._run(token_ids, True, self.cache, self.self_names)

    def select(self, rows: np.ndarray, requests_changed: bool) -> None:
        """Keep ``rows`` (indices of current rows, in their new order); cross-attention rows only move when
        the set of requests changed, because the beams of one request share their encoder states."""
        unchanged = len(rows) == self.rows and bool((rows == np.arange(self.rows)).all())
        if unchanged:
            return
        names = self.past_names if requests_changed else self.self_names
        for name in names:
            self.cache[name] = self._take(self.cache[name], rows)
        if requests_changed:
            self.states = self._take(self.states, rows)
            self.mask = self._take(self.mask, rows)
        self.rows = len(rows)

    def _run(self, token_ids: np.ndarray, use_cache: bool, past: dict[str, Any], wanted: list[str]) -> np.ndarray:
        (embeds,) = self.runner.run(EMBED_TOKENS, {"input_ids": np.asarray(token_ids, dtype=np.int64)[:, None]})
        feeds = {
            "inputs_embeds": embeds,
            "encoder_hidden_states": self.states,
            "encoder_attention_mask": self.mask,
            "use_cache_branch": np.array([use_cache]),
            **past,
        }
        presents = [self.present[name] for name in wanted]
        if self.bound_graph is not None:
            (logits,), values = self.bound_graph.run_bound(feeds, ["logits"], presents, self.device, self.device_id)
        else:
            logits, *values = self.runner.run(DECODER, feeds, ["logits", *presents])
        self.cache.update(zip(wanted, values, strict=True))
        self.rows = len(token_ids)
        return np.asarray(logits[:, -1, :], dtype=np.float32)

    def _to_device(self, array: np.ndarray) -> Any:
        return ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id) if self.bound else array

    def _take(self, value: Any, rows: np.ndarray) -> Any:
        if isinstance(value, ort.OrtValue):
            return self._to_device(np.ascontiguousarray(value.numpy()[rows]))
        return value[rows]


def _dtype(specs: Any, name: str) -> Any:
    spec = specs.get(name)
    return spec.dtype if spec is not None else np.float32


def _empty_shape(shape: tuple[int | str | None, ...], rows: int) -> tuple[int, ...]:
    # [batch, heads, 0, head_dim]; a symbolic head dimension can be anything, the no-cache branch ignores it.
    heads = shape[1] if isinstance(shape[1], int) else 1
    head_dim = shape[3] if isinstance(shape[3], int) else 1
    return (rows, heads, 0, head_dim)
