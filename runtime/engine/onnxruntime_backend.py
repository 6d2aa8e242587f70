"""The ONNX Runtime backend: sessions for the four Florence-2 graphs (provider, threads, warm IO, memory).

This is the one place where onnxruntime's exceptions become ours (InferenceFailed at run time,
ModelLoadFailed at load time).

Memory, measured on the large fp32 model (3.07 GiB of ONNX weights). From graphs that hold their weights inline,
creating a session parses the file and copies its weights, then frees the copies that pre-packing replaced; glibc
keeps that freed memory resident (4.2 GiB after loading), so the C heap is trimmed after each session (3.2 GiB,
1.03x). Our exporter keeps the weights in ``<graph>.onnx_data`` files, which ONNX Runtime maps instead: 2.97 GiB
after loading (pages never read, such as unused embedding rows, stay on disk), in 2.9 s instead of 10.4 s. The
sessions are created largest load transient first (``LOAD_ORDER``). With ``EngineSettings.release_memory`` no
allocator keeps memory that one graph used while the others run (see ``session_options`` and ``run_options``).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from runtime.engine.sessions import Sessions, TensorSpec, graph_files, open_graphs, paths_of
from runtime.engine.settings import EngineSettings
from runtime.engine.split_decoder import SplitDecoder
from runtime.errors import InferenceFailed, ModelLoadFailed
from runtime.model_folder import DECODER, ENCODER, ONNX_DIR, VISION_ENCODER

log = logging.getLogger(__name__)

# With release_memory, the C heap is trimmed before each run of these graphs: they run a few times per request,
# seconds each, and need room for large activations (0.7 GiB for one 768x768 image in the large vision encoder,
# 0.5 GiB for the large text encoder at batch 8), which the previous batch's freed KV cache would otherwise hold.
# Not the decoder: trimming the heap its steps fragment (+0.5 GiB over 128 steps at batch 8) costs about 5% of the
# step time every 16 steps and a quarter at every step, because the pages are faulted back in.
_TRIM_BEFORE_RUN: tuple[str, ...] = (VISION_ENCODER, ENCODER)
# Graphs whose outputs outlive their run: the decoder's are the KV cache, held for the whole generation.
_LASTING_OUTPUTS: tuple[str, ...] = (DECODER,)

_CPU = "CPUExecutionProvider"
# ONNX Runtime's run option that frees a device arena's unused regions at the end of each run.
_ARENA_SHRINKAGE = "memory.enable_memory_arena_shrinkage"
_CUDA = "CUDAExecutionProvider"
_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


class Graph:
    """One InferenceSession and the tensors it declares."""

    def __init__(
        self,
        name: str,
        path: Path,
        variant: str,
        session: ort.InferenceSession,
        run_options: ort.RunOptions | None = None,
        *,
        trim_heap: bool = False,
    ) -> None:
        self.name = name
        self.path = path
        self.variant = variant
        self.session = session
        self.run_options = run_options
        self.trim_heap = trim_heap  # give the C heap's free pages back before each run
        self.inputs = {
            i.name: TensorSpec(i.name, np.dtype(_DTYPES.get(i.type, np.float32)), tuple(i.shape))
            for i in session.get_inputs()
        }
        self.outputs = tuple(o.name for o in session.get_outputs())
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)

    def prepare(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Keep the inputs the graph declares, in its dtypes (the exporter may have dropped unused ones)."""
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise InferenceFailed(f"{self.name} needs inputs {missing} that the engine did not provide")
        return {name: _as_input(feeds[name], spec) for name, spec in self.inputs.items()}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        self._before_run()
        try:
            return self.session.run(list(outputs) if outputs else None, self.prepare(feeds), self.run_options)
        except InferenceFailed:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidArgument / RuntimeException types
            raise InferenceFailed(f"{self.name} ({self.path.name}) failed: {exc}") from exc

    def run_bound(
        self,
        feeds: Mapping[str, Any],
        host_outputs: Sequence[str],
        device_outputs: Sequence[str],
        device: str,
        device_id: int,
    ) -> tuple[list[np.ndarray], list[ort.OrtValue]]:
        """Run with IO binding: ``device_outputs`` stay on ``device`` as OrtValues, ``host_outputs`` come back."""
        self._before_run()
        try:
            binding = self.session.io_binding()
            for name, value in self.prepare(feeds).items():
                if isinstance(value, ort.OrtValue):
                    binding.bind_ortvalue_input(name, value)
                else:
                    binding.bind_cpu_input(name, value)
            for name in host_outputs:
                binding.bind_output(name, "cpu")
            for name in device_outputs:
                binding.bind_output(name, device, device_id)
            self.session.run_with_iobinding(binding, self.run_options)
            values = binding.get_outputs()
        except InferenceFailed:
            raise
        except Exception as exc:
            raise InferenceFailed(f"{self.name} ({self.path.name}) failed: {exc}") from exc
        n = len(host_outputs)
        return [v.numpy() for v in values[:n]], list(values[n:])

    def _before_run(self) -> None:
        if self.trim_heap:
            release_free_heap()


def _as_input(value: Any, spec: TensorSpec) -> Any:
    return value if isinstance(value, ort.OrtValue) else np.ascontiguousarray(value, spec.dtype)


def choose_providers(setting: str, device_id: int, available: Sequence[str] | None = None) -> list[Any]:
    """CUDA when asked or when ``auto`` finds onnxruntime-gpu; CPU always last, as the fallback."""
    available = list(ort.get_available_providers() if available is None else available)
    if setting == "cpu":
        return [_CPU]
    if _CUDA in available:
        return [(_CUDA, {"device_id": device_id}), _CPU]
    if setting == "cuda":
        raise ModelLoadFailed(
            "the CUDA execution provider was requested but this onnxruntime build has none "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or set the provider to auto or cpu"
        )
    return [_CPU]


def session_options(settings: EngineSettings, graph: str | None = None) -> ort.SessionOptions:
    """Options for the session of ``graph`` (None: any graph)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = _OPTIMIZATION[settings.graph_optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: exported graphs carry harmless initializer warnings
    options.add_session_config_entry("session.disable_prepacking", "0" if settings.prepack_weights else "1")
    if settings.release_memory and graph in _LASTING_OUTPUTS:
        # ONNX Runtime's outputs are views of the memory it allocated them in. In the CPU arena, a finished batch's
        # KV cache would stay with the arena (0.6 GiB at batch 8) through the next batch's image encoding; from the
        # C heap it is freed with the arrays and trimmed before that encoding. Decoder steps run no slower (the
        # first step of a batch of 8 takes about 0.1 s longer: its 0.46 GiB cross-attention cache is paged in).
        options.enable_cpu_mem_arena = False
    return options


def run_options(settings: EngineSettings, graph: str | None = None) -> ort.RunOptions:
    """Options for each run of ``graph`` (None: any graph with a CPU arena)."""
    options = ort.RunOptions()
    if settings.release_memory and graph not in _LASTING_OUTPUTS:
        # Free the CPU arena's unused regions at the end of each run (the GPU's would cost a device allocation).
        options.add_run_config_entry(_ARENA_SHRINKAGE, "cpu:0")
    return options


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc (musl, macOS) or no process handle (Windows)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_heap() -> None:
    """Give the C heap's free pages back to the system (glibc only; elsewhere nothing to do).

    glibc returns freed memory only from the top of its heaps; what is freed below (the parsed weights a new
    session replaced, a finished batch's KV cache) stays resident until trimmed. Takes a few milliseconds.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def open_graph(
    onnx_dir: Path,
    name: str,
    settings: EngineSettings,
    providers: list[Any],
    options: ort.SessionOptions | None = None,
) -> Graph | SplitDecoder:
    """The session of graph ``name`` as the engine runs it; ``options`` replaces ``session_options(settings, name)``
    (the benchmark adds profiling to them). A decoder from two files is a SplitDecoder."""
    files = graph_files(onnx_dir, name, settings)
    graphs = [_open_file(name, path, files.variant, settings, providers, options) for path in files.paths]
    return SplitDecoder(*graphs) if files.split else graphs[0]


def _open_file(
    name: str,
    path: Path,
    variant: str,
    settings: EngineSettings,
    providers: list[Any],
    options: ort.SessionOptions | None,
) -> Graph:
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options or session_options(settings, name), providers=providers
        )
    except Exception as exc:
        raise ModelLoadFailed(f"ONNX Runtime cannot load {path}: {exc}; export the model again") from exc
    release_free_heap()
    trim_heap = settings.release_memory and name in _TRIM_BEFORE_RUN
    return Graph(name, path, variant, session, run_options(settings, name), trim_heap=trim_heap)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def open(self, model_dir: Path, settings: EngineSettings) -> Sessions:
        providers = choose_providers(settings.provider, settings.device_id)

        def open_file(name: str, path: Path, variant: str) -> Graph:
            return _open_file(name, path, variant, settings, providers, None)

        graphs = open_graphs(model_dir / ONNX_DIR, settings, open_file)
        decoder = graphs[DECODER]
        in_use = tuple((decoder.with_past if isinstance(decoder, SplitDecoder) else decoder).session.get_providers())
        if settings.provider == "cuda" and in_use[0] != _CUDA:
            raise ModelLoadFailed(
                "the CUDA execution provider could not start (no GPU or driver?); set the provider to cpu"
            )
        if settings.provider == "auto" and providers[0] != _CPU and in_use[0] != _CUDA:
            log.warning("onnxruntime-gpu is installed but CUDA could not start; running on CPU")
        io_binding = settings.io_binding if settings.io_binding is not None else in_use[0] == _CUDA
        log.info(
            "%s: backend onnxruntime, execution providers %s (requested %s), intra-op threads %s, inter-op threads "
            "%s, graph optimization %s, IO binding %s, release memory %s, graphs %s",
            model_dir.name,
            ", ".join(in_use),
            settings.provider,
            settings.intra_op_threads or "auto",
            settings.inter_op_threads or "auto",
            settings.graph_optimization,
            "on" if io_binding else "off",
            "on" if settings.release_memory else "off",
            ", ".join(f"{name}={'+'.join(p.name for p in paths_of(graph))}" for name, graph in graphs.items()),
        )
        return Sessions(graphs, in_use, settings.device_id, io_binding, backend=self.name, precision="f32")
