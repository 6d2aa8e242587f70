"""The OpenVINO backend: the same graph files, compiled by OpenVINO for the CPU (the ``openvino`` extra).

OpenVINO reads the exported ONNX files directly (external weight files included) and, on Intel CPUs with AMX or
AVX-512 BF16, runs them in bf16 (``precision=bf16``: the vision encoder of the large model 2.8x faster than ONNX
Runtime fp32 on a 2-core Xeon with AMX). It cannot compile the merged decoder (its ``If`` returns tensors of a rank
it cannot infer), so the decoder is loaded as its two parts (runtime/model_folder.py; a SplitDecoder drives them
as one graph). Both parts hold the decoder's weights once each: the decoder takes twice its memory.

OpenVINO's CPU default precision is bf16 wherever the CPU has a bf16 unit, so ``f32`` is always set explicitly:
the f32 backend gives the same tokens as ONNX Runtime (tests/runtime/engine/test_engine_parity.py). The dynamic
int8 files (``int8``/``q8``: DynamicQuantizeLinear + MatMulInteger) compile too; q4's MatMulNBits is an ONNX Runtime
contrib operator, which OpenVINO refuses at load with a message naming it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engine.onnx_metadata import read_metadata
from runtime.engine.sessions import Sessions, TensorSpec, open_graphs, paths_of
from runtime.engine.settings import EngineSettings
from runtime.errors import InferenceFailed, ModelLoadFailed
from runtime.model_folder import ONNX_DIR

log = logging.getLogger(__name__)

DEVICE = "CPU"
PROVIDER = "OpenVINO:CPU"  # what ModelInfo.providers shows
INSTALL_HINT = "pip install -e .[openvino]"


def import_openvino() -> Any:
    """The openvino module, or a load error that says how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise ModelLoadFailed(
            f"the openvino backend was requested but OpenVINO is not installed ({exc}); install it with "
            f"{INSTALL_HINT}, or set FLORENCE_ENGINE_BACKEND=onnxruntime"
        ) from exc
    return openvino


def compile_properties(settings: EngineSettings) -> dict[str, Any]:
    """What each graph is compiled with: the precision always (OpenVINO's CPU default is bf16 on bf16 CPUs), the
    thread count when one is set, latency mode (one request at a time; the engine batches)."""
    properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": settings.precision, "PERFORMANCE_HINT": "LATENCY"}
    if settings.intra_op_threads:
        properties["INFERENCE_NUM_THREADS"] = settings.intra_op_threads
    return properties


class OpenVinoGraph:
    """One compiled graph file and the tensors it declares."""

    def __init__(self, name: str, path: Path, variant: str, compiled: Any) -> None:
        self.name = name
        self.path = path
        self.variant = variant
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.lock = threading.Lock()  # one infer request per graph: runs of one graph take turns
        self.inputs = {
            port.get_any_name(): TensorSpec(
                port.get_any_name(),
                np.dtype(port.get_element_type().to_dtype()),
                tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape()),
            )
            for port in compiled.inputs
        }
        self.outputs = tuple(port.get_any_name() for port in compiled.outputs)
        self._output_ports = {name: port for port in compiled.outputs for name in port.get_names()}
        self.metadata: dict[str, str] = read_metadata(path)

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise InferenceFailed(f"{self.name} needs inputs {missing} that the engine did not provide")
        inputs = {name: np.ascontiguousarray(feeds[name], spec.dtype) for name, spec in self.inputs.items()}
        wanted = list(outputs) if outputs else list(self.outputs)
        try:
            with self.lock:
                results = self.request.infer(inputs, share_inputs=True, share_outputs=False)
                return [results[self._output_ports[name]] for name in wanted]
        except KeyError as exc:
            raise InferenceFailed(f"{self.name} ({self.path.name}) has no output {exc}") from exc
        except Exception as exc:  # OpenVINO raises RuntimeError with its own message
            raise InferenceFailed(f"{self.name} ({self.path.name}) failed: {exc}") from exc

    @property
    def precision(self) -> str:
        """The precision the graph was compiled to run in (``f32`` or ``bf16``)."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


class OpenVinoBackend:
    name = "openvino"

    def open(self, model_dir: Path, settings: EngineSettings) -> Sessions:
        openvino = import_openvino()
        core = openvino.Core()
        if settings.compile_cache_dir:
            Path(settings.compile_cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": settings.compile_cache_dir})
        properties = compile_properties(settings)

        def open_file(name: str, path: Path, variant: str) -> OpenVinoGraph:
            try:
                compiled = core.compile_model(core.read_model(str(path)), DEVICE, properties)
            except Exception as exc:
                raise ModelLoadFailed(
                    f"OpenVINO cannot load {path} ({variant}): {exc}; serve this variant with "
                    "FLORENCE_ENGINE_BACKEND=onnxruntime, or choose another variant"
                ) from exc
            return OpenVinoGraph(name, path, variant, compiled)

        graphs = open_graphs(model_dir / ONNX_DIR, settings, open_file, decoder_parts=True)
        log.info(
            "%s: backend openvino %s on %s, precision %s, threads %s, compile cache %s, graphs %s",
            model_dir.name,
            openvino.__version__,
            core.get_property(DEVICE, "FULL_DEVICE_NAME"),
            settings.precision,
            settings.intra_op_threads or "auto",
            settings.compile_cache_dir or "off",
            ", ".join(f"{name}={'+'.join(p.name for p in paths_of(graph))}" for name, graph in graphs.items()),
        )
        return Sessions(graphs, (PROVIDER,), 0, False, backend=self.name, precision=settings.precision)
