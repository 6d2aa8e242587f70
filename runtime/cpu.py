"""What the CPU can compute fast: its model name and the instruction-set features that decide which precision and
which library win on it (AMX and AVX-512 BF16 make bf16 several times faster than fp32; VNNI speeds up int8).
Read by the engine's ``variant=fastest`` decision and recorded by the benchmark: one reading of the CPU for both.

Read from ``/proc/cpuinfo`` on Linux; elsewhere the model name comes from ``platform.processor()`` (or
``sysctl`` on macOS) and the features are unknown (``None``), so that no rule mistakes "not read" for "absent".
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Report name -> /proc/cpuinfo flag.
FEATURE_FLAGS: dict[str, str] = {
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
    "avx512f": "avx512f",
    "avx512_bf16": "avx512_bf16",
    "avx512_vnni": "avx512_vnni",
    "avx512_fp16": "avx512_fp16",
    "avx_vnni": "avx_vnni",
    "avx2": "avx2",
    "fma": "fma",
}


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    features: dict[str, bool] | None  # None: the features could not be read on this platform
    source: str  # where they were read from

    @classmethod
    def with_flags(cls, *flags: str, model: str = "a CPU") -> CpuFeatures:
        """A CPU with exactly these features (for decisions about CPUs other than this one)."""
        return cls(model, {name: flag in flags for name, flag in FEATURE_FLAGS.items()}, "given")

    def has(self, name: str) -> bool:
        """Whether the CPU has feature ``name``; an unread feature counts as absent."""
        return bool(self.features and self.features.get(name))

    @property
    def bf16_tiles(self) -> bool:
        """AMX's bf16 tiles: several times fp32's matmul rate."""
        return self.has("amx_bf16")

    @property
    def bf16_vectors(self) -> bool:
        """AVX-512 BF16 dot products: about twice fp32's rate."""
        return self.has("avx512_bf16")

    @property
    def int8_pays(self) -> bool:
        """int8 dot products that make dynamic int8 faster than fp32: VNNI or AMX int8, or AVX2's slower pair of
        instructions (ONNX Runtime's int8 kernels use it)."""
        return any(self.has(name) for name in ("amx_int8", "avx512_vnni", "avx_vnni", "avx2"))

    @property
    def bf16_unit(self) -> bool | None:
        """Whether bf16 matmuls run in hardware (AMX or AVX-512 BF16); without, libraries emulate bf16 in fp32
        and it is slower than fp32 itself."""
        if self.features is None:
            return None
        return self.features["amx_bf16"] or self.features["avx512_bf16"]

    @property
    def int8_dot_product(self) -> bool | None:
        """Whether int8 dot products have their own instructions (AMX int8, AVX-512 VNNI or AVX-VNNI)."""
        if self.features is None:
            return None
        return self.features["amx_int8"] or self.features["avx512_vnni"] or self.features["avx_vnni"]

    def summary(self) -> str:
        """One line for the report: the model and the features present."""
        if self.features is None:
            return f"{self.model} (instruction-set features unknown: {self.source})"
        present = [name for name, has in self.features.items() if has]
        return f"{self.model}; {', '.join(present) or 'none of ' + ', '.join(FEATURE_FLAGS)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "features": self.features,
            "source": self.source,
            "bf16_unit": self.bf16_unit,
            "int8_dot_product": self.int8_dot_product,
        }


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's model name and flags from ``/proc/cpuinfo`` text (x86: ``model name`` and
    ``flags``; other architectures name them differently and have none of the x86 features)."""
    model = ""
    flags: set[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    features = {name: flag in flags for name, flag in FEATURE_FLAGS.items()} if flags is not None else None
    return CpuFeatures(model or platform.processor() or "unknown CPU", features, "/proc/cpuinfo")


def detect(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    try:
        return parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        pass
    return CpuFeatures(_model_elsewhere(), None, f"no {cpuinfo} on {platform.system() or 'this platform'}")


def _model_elsewhere() -> str:
    if platform.system() == "Darwin":
        try:
            found = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=False
            )
            if found.returncode == 0 and found.stdout.strip():
                return found.stdout.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown CPU"
