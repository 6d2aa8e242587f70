"""The graphs of one model folder, opened by a backend, behind the one seam inference uses (``GraphRunner``).

A backend turns graph files into runnable graphs: ONNX Runtime (runtime/engine/onnxruntime_backend.py, the
default, CPU or CUDA) or OpenVINO (runtime/engine/openvino_backend.py, CPU; imported only when chosen, it is an
optional extra). Everything above this module (decoder, KV cache, batching, beam search) is the same for both.
``EngineSettings.backend`` picks one; ``variant=fastest`` lets runtime/engine/fastest.py pick backend, precision
and variant for the machine and folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.engine.settings import EngineSettings
from runtime.engine.split_decoder import SplitDecoder
from runtime.engine.variants import GraphFiles, MissingVariant, find_graph_files
from runtime.errors import ModelLoadFailed
from runtime.model_folder import DECODER, EMBED_TOKENS, ENCODER, GRAPHS, VISION_ENCODER

log = logging.getLogger(__name__)

__all__ = [
    "DECODER",
    "EMBED_TOKENS",
    "ENCODER",
    "GRAPHS",
    "LOAD_ORDER",
    "VISION_ENCODER",
    "Backend",
    "GraphRunner",
    "RunnableGraph",
    "Sessions",
    "TensorSpec",
    "backend_for",
    "graph_files",
    "open_sessions",
]

# The order the graphs are opened in. While a graph is opened, its weights briefly exist twice (as parsed and as
# pre-packed or compiled); the decoder's transient is the largest (2.2 GiB for its 1.0 GB file with ONNX Runtime),
# so it goes first, onto the smallest resident base. Large fp32 model: load peak 3.4-3.8 GiB in this order, 4.5 GiB
# in GRAPHS order (vision first, decoder last).
LOAD_ORDER: tuple[str, ...] = (DECODER, VISION_ENCODER, ENCODER, EMBED_TOKENS)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | str | None, ...]


class GraphRunner(Protocol):
    """What inference needs from the sessions; tests wrap it to perturb a graph's inputs or outputs."""

    device: str  # "cpu" or "cuda"

    def inputs(self, graph: str) -> Mapping[str, TensorSpec]: ...

    def metadata(self, graph: str) -> Mapping[str, str]:
        """The graph file's custom metadata (ONNX ``metadata_props``)."""

    def run(
        self, graph: str, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]: ...


class RunnableGraph(Protocol):
    """One opened graph file, whichever backend opened it."""

    name: str
    path: Path
    variant: str
    inputs: Mapping[str, TensorSpec]
    outputs: tuple[str, ...]
    metadata: Mapping[str, str]

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]: ...


class Backend(Protocol):
    """Opens a model folder's graphs for one inference library."""

    name: str  # "onnxruntime" | "openvino"

    def open(self, model_dir: Path, settings: EngineSettings) -> Sessions: ...


class Sessions:
    """The four graphs of one model folder, opened by one backend on one device."""

    def __init__(
        self,
        graphs: Mapping[str, Any],
        providers: tuple[str, ...],
        device_id: int,
        io_binding: bool,
        *,
        backend: str = "onnxruntime",
        precision: str = "f32",
    ):
        self.graphs = dict(graphs)
        self.providers = providers
        self.device = "cuda" if providers[0] == "CUDAExecutionProvider" else "cpu"
        self.device_id = device_id
        # Only CUDA gains from it; on CPU it can be asked for explicitly (it exercises the same code path).
        self.io_binding = io_binding
        self.backend = backend
        self.precision = precision

    def graph(self, name: str) -> Any:
        return self.graphs[name]

    def inputs(self, graph: str) -> Mapping[str, TensorSpec]:
        return self.graphs[graph].inputs

    def metadata(self, graph: str) -> Mapping[str, str]:
        return self.graphs[graph].metadata

    def run(
        self, graph: str, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        return self.graphs[graph].run(feeds, outputs)

    def variants(self) -> dict[str, str]:
        return {name: graph.variant for name, graph in self.graphs.items()}


def graph_files(onnx_dir: Path, graph: str, settings: EngineSettings, *, decoder_parts: bool = False) -> GraphFiles:
    """The file(s) of ``graph`` in the variant the settings choose for it (runtime/engine/variants.py);
    ``decoder_parts``: the decoder as its two parts only (a backend that cannot run the merged graph)."""
    variant = settings.variant_choice.of(graph)
    try:
        files, fell_back = find_graph_files(
            onnx_dir, graph, variant, fallback=settings.variant_fallback, decoder_parts=decoder_parts
        )
    except (MissingVariant, FileNotFoundError) as exc:  # their messages say what the folder has and what to do
        raise ModelLoadFailed(str(exc)) from None
    if fell_back:
        log.warning("%s has no %s file in %s; loading fp32 (variant_fallback is on)", graph, variant, onnx_dir)
    return files


def open_graphs(
    onnx_dir: Path,
    settings: EngineSettings,
    open_file: Callable[[str, Path, str], Any],
    *,
    decoder_parts: bool = False,
) -> dict[str, Any]:
    """Every graph of the folder in ``LOAD_ORDER``, returned in ``GRAPHS`` order; ``open_file(name, path,
    variant)`` opens one file, and a decoder from two files becomes a SplitDecoder."""
    created = {}
    for name in LOAD_ORDER:
        files = graph_files(onnx_dir, name, settings, decoder_parts=decoder_parts)
        opened = [open_file(name, path, files.variant) for path in files.paths]
        created[name] = SplitDecoder(*opened) if files.split else opened[0]
    return {name: created[name] for name in GRAPHS}


def backend_for(settings: EngineSettings) -> Backend:
    """The backend the (resolved) settings name; OpenVINO's module is imported only here, when chosen."""
    if settings.backend == "openvino":
        from runtime.engine.openvino_backend import OpenVinoBackend

        return OpenVinoBackend()
    from runtime.engine.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend()


def open_sessions(model_dir: Path, settings: EngineSettings) -> Sessions:
    """The folder's graphs, opened by the backend the settings choose (``variant=fastest`` is decided here when
    the caller has not decided it already)."""
    from runtime.engine.fastest import resolve

    settings = resolve(settings, model_dir)
    return backend_for(settings).open(model_dir, settings)


def paths_of(graph: Any) -> tuple[Path, ...]:
    return graph.paths if isinstance(graph, SplitDecoder) else (graph.path,)
