"""One decoder step at a time over ``decoder_model_merged``, holding the KV cache between steps.

The first step runs the no-cache branch (``use_cache_branch`` False, empty past) with one row per request and
returns the cross-attention KV, which stays fixed afterwards; later steps feed one token per row and grow the
self-attention KV. Rows are hypotheses: ``select`` reorders them by index (beam search) or drops finished ones,
and copies nothing when the order is unchanged.

Graphs from our exporter keep the cross-attention KV once per request, shared by the request's rows (their
metadata says so; export/cross_attention.py). Such a graph needs the same number of rows for every request, so a
request with fewer rows than another (greedy next to beam search) is padded with copies of its last row, whose
logits are dropped. Graphs exported elsewhere keep it once per row; then it follows the rows.

With IO binding (on by default with CUDA) the cache stays on the device between steps; only a reorder or a
change of requests brings it to the host and back, so greedy decoding of one batch never copies it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.engine.sessions import GraphRunner, Sessions
from runtime.model_folder import CROSS_CACHE_KEY, DECODER, EMBED_TOKENS, PER_REQUEST

_PAST = re.compile(r"past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)")


class OrtDecoder:
    def __init__(self, runner: GraphRunner, encoder_states: np.ndarray, encoder_mask: np.ndarray) -> None:
        self.runner = runner
        specs = runner.inputs(DECODER)
        self.past_names = [name for name in specs if _PAST.fullmatch(name)]
        self.self_names = [name for name in self.past_names if ".decoder." in name]
        self.cross_names = [name for name in self.past_names if ".encoder." in name]
        self.present = {name: "present" + name[len("past_key_values") :] for name in self.past_names}
        self.past_specs = {name: specs[name] for name in self.past_names}
        self.shared_cross = runner.metadata(DECODER).get(CROSS_CACHE_KEY) == PER_REQUEST
        # IO binding needs the real sessions; a wrapped runner (tests) always takes the host path.
        self.bound_graph = runner.graph(DECODER) if isinstance(runner, Sessions) and runner.io_binding else None
        self.bound = self.bound_graph is not None
        self.device = runner.device
        self.device_id = runner.device_id if isinstance(runner, Sessions) else 0
        self.states: Any = self._to_device(encoder_states.astype(_dtype(specs, "encoder_hidden_states"), copy=False))
        self.mask: Any = self._to_device(encoder_mask.astype(_dtype(specs, "encoder_attention_mask"), copy=False))
        self.cache: dict[str, Any] = {}
        self.requests = encoder_states.shape[0]
        # The rows the graph runs: the request each belongs to, and which of them are real (None: all are).
        self.row_requests = np.arange(self.requests)
        self.real: np.ndarray | None = None
        self.sources: np.ndarray | None = None  # per graph row, the real row whose token it is fed

    @property
    def rows(self) -> int:
        """Rows the graph runs, padding included."""
        return len(self.row_requests)

    def start(self, token_ids: np.ndarray) -> np.ndarray:
        """First step: one token per request (the decoder start); returns float32 logits [requests, vocab]."""
        if len(token_ids) != self.requests:
            raise ValueError(f"the first step takes one row per request ({self.requests}), not {len(token_ids)}")
        empty = {
            name: np.zeros(_empty_shape(spec.shape, len(token_ids)), spec.dtype)
            for name, spec in self.past_specs.items()
        }
        return self._run(token_ids, False, empty, self.past_names)

    def step(self, token_ids: np.ndarray) -> np.ndarray:
        """One token per real row; returns float32 logits [real rows, vocab]."""
        if self.sources is not None:
            token_ids = np.asarray(token_ids)[self.sources]
        logits = self._run(token_ids, True, self.cache, self.self_names)
        return logits if self.real is None else logits[self.real]

    def select(self, parents: Sequence[np.ndarray], kept: np.ndarray) -> None:
        """Continue request ``kept[i]`` (its position among the current requests) from the current real rows
        ``parents[i]``, in that order; the rows of requests not kept are dropped."""
        real = np.arange(self.rows) if self.real is None else self.real
        groups = [real[np.asarray(p, dtype=np.int64)] for p in parents]
        kept = np.asarray(kept, dtype=np.int64)
        if self.shared_cross:
            rows, row_requests = self._pad(groups)
            cross_moves, cross_rows = not _is_identity(kept, self.requests), kept
        else:
            rows = np.concatenate(groups) if groups else np.zeros(0, np.int64)
            row_requests = self.row_requests[rows]
            # Rows of one request hold equal cross-attention KV: it moves only when the request of a row changes.
            cross_moves = len(rows) != self.rows or bool((row_requests != self.row_requests).any())
            cross_rows = rows
        if not _is_identity(rows, self.rows):
            for name in self.self_names:
                self.cache[name] = self._reorder(self.cache[name], rows)
        if cross_moves:
            for name in self.cross_names:
                self.cache[name] = self._take(self.cache[name], cross_rows)
            self.states = self._take(self.states, cross_rows)
            self.mask = self._take(self.mask, cross_rows)
        self.requests = len(kept)
        self.row_requests = row_requests

    def _pad(self, groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for the shared cross-attention cache: every request as wide as the widest, the narrower ones
        padded with their last row. Returns the cache rows to take and the request of each; sets ``real``
        (graph rows whose logits count) and ``sources`` (the real row whose token each graph row is fed)."""
        counts = [len(group) for group in groups]
        width = max(counts, default=0)
        rows = [np.concatenate([group, np.repeat(group[-1:], width - len(group))]) for group in groups]
        if all(n == width for n in counts):
            self.real = self.sources = None
        else:
            firsts = np.cumsum([0, *counts[:-1]])
            self.real = np.concatenate([i * width + np.arange(n) for i, n in enumerate(counts)])
            self.sources = np.concatenate(
                [first + np.minimum(np.arange(width), n - 1) for first, n in zip(firsts, counts, strict=True)]
            )
        taken = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return taken, np.repeat(np.arange(len(groups)), width)

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
        return np.asarray(logits[:, -1, :], dtype=np.float32)

    def _to_device(self, array: np.ndarray) -> Any:
        return ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id) if self.bound else array

    def _reorder(self, value: Any, rows: np.ndarray) -> Any:
        """The self-attention cache (which the decoder owns) in the order ``rows``. A beam step with the same rows
        moves only some of them: only those are copied, in place (at 8 requests x 3 beams and 96 tokens the cache
        is 216 MiB, and a full copy takes 20 ms of an 85 ms step)."""
        if isinstance(value, np.ndarray) and len(rows) == len(value) and value.flags.writeable:
            moved = np.flatnonzero(rows != np.arange(len(rows)))
            value[moved] = value[rows[moved]]  # the right side is a copy, so sources are read before any write
            return value
        return self._take(value, rows)

    def _take(self, value: Any, rows: np.ndarray) -> Any:
        if isinstance(value, ort.OrtValue):
            return self._to_device(np.ascontiguousarray(value.numpy()[rows]))
        return value[rows]


def _is_identity(indices: np.ndarray, length: int) -> bool:
    return len(indices) == length and bool((indices == np.arange(length)).all())


def _dtype(specs: Any, name: str) -> Any:
    spec = specs.get(name)
    return spec.dtype if spec is not None else np.float32


def _empty_shape(shape: tuple[int | str | None, ...], rows: int) -> tuple[int, ...]:
    # [batch, heads, 0, head_dim]; a symbolic head dimension can be anything, the no-cache branch ignores it.
    heads = shape[1] if isinstance(shape[1], int) else 1
    head_dim = shape[3] if isinstance(shape[3], int) else 1
    return (rows, heads, 0, head_dim)
