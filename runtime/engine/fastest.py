"""``variant=fastest``: the backend, precision and variant that run fastest on this CPU with this model folder.

A pure decision (``decide``) over three inputs: the CPU's features (``/proc/cpuinfo`` flags), whether OpenVINO is
installed, and which variants the folder holds for each backend. ``resolve`` gathers them, decides, logs the choice
and why in one line, and returns settings with the choice filled in. The default setting stays fp32 on ONNX
Runtime: the only choice whose tokens equal the reference model's.

What the rules rest on (large Florence-2 architecture, random weights, 768x768, 2 threads):

- 2-core Xeon with AMX: vision encoder ONNX Runtime fp32 6.06 s, ONNX Runtime int8 4.42 s, OpenVINO f32 6.45 s,
  OpenVINO bf16 2.17 s; a decoder step (batch 1) 41 ms fp32, 15.8 ms int8 on ONNX Runtime. AMX's bf16 tiles
  (2.3 TFLOP/s against 0.33 fp32) make OpenVINO bf16 the fastest there.
- 2-core AMD EPYC with AVX2 only (no AVX-512, no bf16 unit; runs alternated in one process, ratios to ONNX
  Runtime fp32): vision encoder OpenVINO f32 1.12x, ONNX Runtime int8 0.54x, OpenVINO int8 1.12x; a decoder step
  OpenVINO f32 1.14x, ONNX Runtime int8 0.29x, OpenVINO int8 1.02x. OpenVINO cannot use bf16 there (it runs f32);
  int8 on ONNX Runtime is the fastest, and OpenVINO's int8 beats its f32 only on the decoder.
- AVX-512 BF16 without AMX (Zen 4, Cooper Lake): bf16 dot products double fp32's rate, VNNI's int8 ones quadruple
  it; dynamic int8 measured 0.44-0.47x of fp32's time on an AVX-512 VNNI CPU (export/variants.py), which bf16 at
  best matches. int8 on ONNX Runtime when the folder has it, OpenVINO bf16 otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.cpu import CpuFeatures, detect
from runtime.engine.settings import FASTEST, EngineSettings
from runtime.engine.variants import available
from runtime.model_folder import GRAPHS, INT8_VARIANTS, ONNX_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderOffer:
    """Variants the folder holds for every graph, per backend (OpenVINO needs the decoder as its two parts)."""

    onnxruntime: tuple[str, ...]
    openvino: tuple[str, ...]

    @classmethod
    def of(cls, model_dir: Path) -> FolderOffer:
        onnx_dir = model_dir / ONNX_DIR
        return cls(_complete(available(onnx_dir)), _complete(available(onnx_dir, decoder_parts=True)))


@dataclass(frozen=True)
class Choice:
    backend: str
    precision: str
    variant: str
    reason: str


def decide(cpu: CpuFeatures, openvino_installed: bool, offer: FolderOffer, *, backends: Sequence[str] = ()) -> Choice:
    """The fastest configuration; ``backends`` limits the backends considered (empty: both)."""
    use_ov = openvino_installed and (not backends or "openvino" in backends)
    use_ort = not backends or "onnxruntime" in backends
    int8_ort = next((v for v in INT8_VARIANTS if v in offer.onnxruntime), None)
    int8_ov = next((v for v in INT8_VARIANTS if v in offer.openvino), None)
    ov_bf16 = use_ov and "fp32" in offer.openvino
    if cpu.bf16_tiles and ov_bf16:
        return Choice("openvino", "bf16", "fp32", "AMX bf16 tiles: OpenVINO bf16 runs the vision encoder 2.8x faster")
    if use_ort and int8_ort and cpu.int8_pays:
        return Choice("onnxruntime", "f32", int8_ort, "int8 dot products and int8 files: ONNX Runtime dynamic int8")
    if cpu.bf16_vectors and ov_bf16:
        return Choice("openvino", "bf16", "fp32", "AVX-512 BF16 and no int8 files: OpenVINO bf16")
    if not use_ort and int8_ov and cpu.int8_pays:
        return Choice("openvino", "f32", int8_ov, "only OpenVINO allowed: its int8")
    if use_ort and "fp32" in offer.onnxruntime:
        return Choice("onnxruntime", "f32", "fp32", "no faster unit or files: ONNX Runtime fp32")
    if use_ov and "fp32" in offer.openvino:
        return Choice("openvino", "f32", "fp32", "only OpenVINO allowed: f32")
    return Choice("onnxruntime" if use_ort else "openvino", "f32", "fp32", "the folder offers nothing faster")


def choose(
    settings: EngineSettings,
    model_dir: Path,
    *,
    cpu: CpuFeatures | None = None,
    openvino_installed: bool | None = None,
) -> Choice:
    """What ``variant=fastest`` serves from ``model_dir`` with ``settings`` (provider, backend) on this machine, the
    inputs gathered here and named in the reason."""
    if settings.provider == "cuda":
        return Choice("onnxruntime", "f32", "fp32", "provider cuda: fp32 on the GPU (CPU features do not apply)")
    cpu = cpu or detect()
    installed = openvino_is_installed() if openvino_installed is None else openvino_installed
    backends = () if settings.backend == "auto" else (settings.backend,)
    offer = FolderOffer.of(model_dir)
    choice = decide(cpu, installed, offer, backends=backends)
    return replace(
        choice,
        reason=f"{choice.reason} (CPU: {cpu.summary()}; openvino {'installed' if installed else 'not installed'};"
        f" folder: onnxruntime {'/'.join(offer.onnxruntime) or 'none'},"
        f" openvino {'/'.join(offer.openvino) or 'none'})",
    )


def resolve(
    settings: EngineSettings,
    model_dir: Path,
    *,
    cpu: CpuFeatures | None = None,
    openvino_installed: bool | None = None,
) -> EngineSettings:
    """``settings`` with ``variant=fastest`` decided (logged); other settings come back unchanged."""
    if settings.variant != FASTEST:
        return settings
    choice = choose(settings, model_dir, cpu=cpu, openvino_installed=openvino_installed)
    log.info(
        "%s: variant fastest chose backend %s, precision %s, variant %s: %s",
        model_dir.name,
        choice.backend,
        choice.precision,
        choice.variant,
        choice.reason,
    )
    return replace(settings, backend=choice.backend, precision=choice.precision, variant=choice.variant)


def _complete(per_graph: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Variants every graph has a file of."""
    return tuple(v for v in per_graph[GRAPHS[0]] if all(v in per_graph[g] for g in GRAPHS))


def openvino_is_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None
