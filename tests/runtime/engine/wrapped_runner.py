"""The real sessions behind a test's change to one graph's runs (the engine's GraphRunner seam)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runtime.engine.sessions import GraphRunner, TensorSpec


class WrappedRunner:
    """Passes everything through to ``inner``; a test's subclass overrides ``run`` to record, gate or perturb."""

    def __init__(self, inner: GraphRunner) -> None:
        self.inner, self.device = inner, inner.device

    def inputs(self, graph: str) -> Mapping[str, TensorSpec]:
        return self.inner.inputs(graph)

    def metadata(self, graph: str) -> Mapping[str, str]:
        return self.inner.metadata(graph)

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        return self.inner.run(graph, feeds, outputs)
