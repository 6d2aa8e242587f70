"""Session wrappers that break one thing on purpose, for the negative controls of the parity tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from export.trace import graph_initializers


class Wrapped:
    """Delegates to an InferenceSession, passing feeds and outputs through the given functions."""

    def __init__(
        self,
        session: Any,
        feeds: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda f: f,
        outputs: Callable[[list[str], list[np.ndarray]], list[np.ndarray]] = lambda n, o: o,
    ) -> None:
        self._session, self._feeds, self._outputs = session, feeds, outputs

    def get_inputs(self) -> Sequence[Any]:
        return self._session.get_inputs()

    def get_outputs(self) -> Sequence[Any]:
        return self._session.get_outputs()

    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = output_names or [o.name for o in self.get_outputs()]
        return self._outputs(names, self._session.run(names, self._feeds(dict(input_feed))))


def scale_outputs(session: Any, factor: float) -> Wrapped:
    return Wrapped(session, outputs=lambda names, outs: [o * factor for o in outs])


def drop_self_attention_history(session: Any) -> Wrapped:
    """Zero the cached self-attention keys and values, as a runtime that forgets its KV history would."""

    def feeds(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if f["use_cache_branch"].all():
            for name in f:
                if name.startswith("past_key_values.") and ".decoder." in name:
                    f[name] = np.zeros_like(f[name])
        return f

    return Wrapped(session, feeds=feeds)


def ignore_mask(session: Any, *names: str) -> Wrapped:
    """Feed an all-ones mask, as a runtime that ignores padding would."""

    def feeds(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name in names:
            if name in f:
                f[name] = np.ones_like(f[name])
        return f

    return Wrapped(session, feeds=feeds)


_WEIGHT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8)


def perturbed_copy(graph: Path, out: Path, scale: float = 0.05, seed: int = 0) -> ort.InferenceSession:
    """A copy of ``graph`` whose largest weight (fp32, fp16 or int8) gets Gaussian noise of ``scale`` times its std."""
    model = onnx.load(str(graph))
    candidates = [t for t in graph_initializers(model.graph) if t.data_type in _WEIGHT_TYPES and len(t.dims) >= 2]
    target = max(candidates, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(target)
    wide = values.astype(np.float64)
    noisy = wide + np.random.default_rng(seed).standard_normal(values.shape) * scale * wide.std()
    if np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        noisy = np.clip(np.rint(noisy), info.min, info.max)
    target.CopyFrom(numpy_helper.from_array(noisy.astype(values.dtype), target.name))
    onnx.save(model, str(out))
    return ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
