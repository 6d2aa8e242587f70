"""Which contenders a run races, and which it leaves out on this machine and why.

- PyTorch eager in fp32 (the reference every fp32 ratio is taken to) and in bf16, what a user of a CPU with a bf16
  unit would run;
- OpenVINO on the exported vision encoder graph, f32 and bf16: the vision stage alone, as a peer of the engine's;
- the engine, once per configuration in ``ENGINE_CONFIGURATIONS`` and variant of the model folder. A configuration
  names a backend and a precision; it runs only when ``EngineSettings`` has the fields it sets, so that the list
  can name backends an engine does not have yet (before it has a ``backend`` field, the one configuration is the
  engine's default, named ``engine-<variant>`` as in earlier results).

bf16 contenders on a CPU without a bf16 unit (AMX or AVX-512 BF16) would run emulated, many times slower than
fp32 (a 256^3 bf16 matmul: 0.5 GFLOP/s against 30 in fp32 on a 2-core AVX2 machine), and would take the run far
beyond its time: they are skipped with that reason unless ``--bf16 always``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runtime.cpu import CpuFeatures

REFERENCE = "pytorch-eager"  # PyTorch eager fp32: the reference of every fp32 ratio
BF16_MODES: tuple[str, ...] = ("auto", "always", "never")


@dataclass(frozen=True)
class EngineConfiguration:
    """One way of running the engine: the ``EngineSettings`` fields it sets besides the variant."""

    backend: str | None = None  # None: the engine's default (EngineSettings without a backend field)
    precision: str | None = None  # f32 | bf16; None: the backend's default
    variants: tuple[str, ...] | None = None  # None: every variant of the model folder the run times

    @property
    def fields(self) -> dict[str, str]:
        return {k: v for k, v in (("backend", self.backend), ("precision", self.precision)) if v is not None}

    def name(self, variant: str) -> str:
        return "-".join(("engine", *self.fields.values(), variant))

    def supported_by(self, engine_fields: Iterable[str]) -> bool:
        return set(self.fields) <= set(engine_fields)


# Every engine configuration the bench races, where the engine has the settings it names.
ENGINE_CONFIGURATIONS: tuple[EngineConfiguration, ...] = (
    EngineConfiguration(),  # the engine's default: ONNX Runtime, each variant
    EngineConfiguration("onnxruntime", "f32"),
    EngineConfiguration("openvino", "f32", ("fp32",)),
    EngineConfiguration("openvino", "bf16", ("fp32",)),
    EngineConfiguration("auto", None, ("fastest",)),  # what the engine picks for this machine
)


def engine_configurations(engine_fields: Iterable[str]) -> list[EngineConfiguration]:
    """The configurations this engine can run: those whose fields it has. With a ``backend`` field the default
    configuration is left out, since ``onnxruntime`` and ``auto`` name what it ran."""
    fields = set(engine_fields)
    chosen = [c for c in ENGINE_CONFIGURATIONS if c.fields and c.supported_by(fields)]
    return chosen or [EngineConfiguration()]


def engine_settings_fields() -> frozenset[str]:
    from runtime.engine.settings import EngineSettings

    return frozenset(f.name for f in dataclasses.fields(EngineSettings))


def fastest_choice(model_dir: Path, provider: str) -> tuple[str, str, str, str]:
    """What ``variant=fastest`` serves from ``model_dir`` on this machine: backend, precision, variant and why
    (the engine's own decision, runtime/engine/fastest.py)."""
    from runtime.engine.fastest import choose
    from runtime.engine.settings import EngineSettings

    choice = choose(EngineSettings(variant="fastest", provider=provider), model_dir)  # type: ignore[arg-type]
    return choice.backend, choice.precision, choice.variant, choice.reason


def accepts_variant(variant: str) -> bool:
    """Whether the engine's settings accept ``variant`` (``fastest`` exists only where the engine picks one)."""
    from runtime.engine.settings import EngineSettings

    try:
        EngineSettings(variant=variant)
    except ValueError:
        return False
    return True


def compute_precision(kind: str, variant: str, precision: str | None) -> str:
    """The arithmetic a contender's matmuls run in, which picks its floor: bf16 when it computes in bf16, int8 for
    the integer-quantized variants, fp16 for fp16 graphs, fp32 otherwise (q4 weights are widened to fp32)."""
    if precision == "bf16":
        return "bf16"
    if kind == "engine" and variant in ("int8", "uint8", "q8", "quantized"):
        return "int8"
    if kind == "engine" and variant in ("fp16", "q4f16"):
        return "fp16"
    return "fp32"


def bf16_skip_reason(cpu: CpuFeatures, mode: str, provider: str, what: str) -> str | None:
    """Why a bf16 contender or probe does not run here, or None when it does."""
    if mode == "never":
        return "--bf16 never"
    if mode == "always" or provider != "cpu":
        return None
    if cpu.bf16_unit is None:
        return f"CPU features unknown ({cpu.source}): {what} may be emulated; --bf16 always runs it"
    if not cpu.bf16_unit:
        return (
            f"no bf16 unit (no AMX, no AVX-512 BF16): {what} would be emulated (torch) or fall back to f32 "
            "(OpenVINO); --bf16 always runs it"
        )
    return None


def probe_skips(cpu: CpuFeatures, bf16_mode: str, provider: str) -> dict[str, str]:
    """The machine-rate probes (bench/machine.py) left out on this CPU, with the reason: bf16 as the contenders,
    and torch's ``_int_mm`` where no int8 dot-product unit exists (there it runs a reference loop at under
    1 GOP/s: 0.3-0.8 on the 2-core AMD EPYC); ONNX Runtime's MatMulInteger runs everywhere."""
    skips = {
        probe: reason
        for probe, what in (("torch_bf16", "torch bf16"), ("openvino_bf16", "OpenVINO bf16"))
        if (reason := bf16_skip_reason(cpu, bf16_mode, provider, what))
    }
    if cpu.int8_dot_product is False:
        skips["torch_int8"] = "no int8 dot-product unit (no AMX, no VNNI): torch _int_mm has no fast kernel here"
    return skips
