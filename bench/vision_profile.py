"""Where the vision encoder's time goes, by ONNX Runtime operator type, measured in the benchmark's own run.

The vision target compares the engine's vision stage with its FLOP floor (matmul-class FLOPs over the best measured
matmul rate). ONNX Runtime's profiler splits one run of the graph into kernel times per node; summed per operator
type and split into FLOP-class kernels (the matmuls and convolutions the floor counts) and every other operator
(transposes, softmax, bias adds, layout reorders: bound by memory, not arithmetic), it says how close the stage
could come to the floor even if every other operator cost nothing.

    python -m bench.vision_profile MODEL_DIR [--variant fp32] [--provider cpu] [--threads 0]

The graph is opened in a child process (``profile_in_child``), so that its session (the large fp32 encoder is a
1.4 GB file, 2.4 GiB resident once run) never lives in the benchmark's own process; the child prints one JSON
object. The graph is the one the engine builds (``runtime.engine.sessions.open_graph``: its variant file,
providers, session and run options) with profiling on; it runs once to warm up and once profiled on one image of the
processor's size, and only the profiled run is counted; that run's memory high-water mark over the resident set
before it is what the graph's activations take. The profile file is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.memory import DEFAULT_FLOOR_BYTES, MemoryWatch, ProcHighWaterMark

# Variants whose vision encoder the benchmark profiles, where the folder has them: fp32 (the target) and int8 (the
# fastest vision encoder on a CPU; q4's vision encoder is the int8 conversion).
PROFILED_VARIANTS: tuple[str, ...] = ("fp32", "int8")

# The kernels whose work the FLOP floor counts: matrix products and convolutions, in every form ONNX Runtime's
# fusions and quantized variants give them. Elementwise QLinear* operators (QLinearAdd, QLinearMul, ...) and fused
# attention blocks (which also hold softmax and masking) are not among them.
FLOP_CLASS_OPS: frozenset[str] = frozenset(
    {
        "MatMul",
        "FusedMatMul",
        "Gemm",
        "FusedGemm",
        "QGemm",
        "Conv",
        "FusedConv",
        "NhwcConv",
        "NhwcFusedConv",
        "ConvTranspose",
        "ConvInteger",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
        "MatMulBnb4",
    }
)
# Operators that move no tensor data in ONNX Runtime: they alias their input (a reshape is a view) or read shapes.
# Their bytes are not counted in what the memory-bound operators move.
VIEW_OPS: frozenset[str] = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Size"})
PIXEL_VALUES = "pixel_values"  # the vision graph's input (the model folder's contract)


class ProfileFailed(RuntimeError):
    """The profiling child could not open or run the graph, or its profile held no profiled run."""


@dataclass(frozen=True)
class OperatorTime:
    op_type: str
    ms: float  # kernel time summed over the nodes of this type, in the profiled run
    count: int  # kernel calls (nodes run) of this type
    bytes: int = 0  # tensor bytes its calls read and wrote (inputs and outputs, as the profiler saw their shapes;
    # 0 for VIEW_OPS)

    @property
    def flop_class(self) -> bool:
        return self.op_type in FLOP_CLASS_OPS


@dataclass(frozen=True)
class OperatorBreakdown:
    """Kernel time per operator type in one profiled run, slowest first."""

    operators: tuple[OperatorTime, ...]
    run_ms: float  # the profiler's own span of the run (kernels and what lies between them)

    @property
    def kernel_ms(self) -> float:
        return sum(op.ms for op in self.operators)

    @property
    def flop_class_ms(self) -> float:
        return sum(op.ms for op in self.operators if op.flop_class)

    @property
    def other_ms(self) -> float:
        return sum(op.ms for op in self.operators if not op.flop_class)

    @property
    def other_bytes(self) -> int:
        """What the memory-bound operators move at the least: each reads its inputs and writes its outputs once."""
        return sum(op.bytes for op in self.operators if not op.flop_class)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_ms": self.run_ms,
            "kernel_ms": self.kernel_ms,
            "flop_class_ms": self.flop_class_ms,
            "other_ms": self.other_ms,
            "other_bytes": self.other_bytes,
            "ops": [{**asdict(op), "flop_class": op.flop_class} for op in self.operators],
        }


def parse_profile(events: Iterable[Mapping[str, Any]]) -> OperatorBreakdown:
    """Kernel time per operator type in the last ``model_run`` of an ONNX Runtime profile (its JSON events).

    Each node run leaves a ``<node>_kernel_time`` event (category ``Node``, microseconds, ``args.op_name``); the
    ones inside the last run's span are summed, so that the warm-up run before it is left out."""
    events = list(events)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        raise ProfileFailed("the profile holds no model_run event: the graph was not run while profiling")
    last = max(runs, key=lambda e: e["ts"])
    start, end = last["ts"], last["ts"] + last["dur"]
    micros: dict[str, float] = {}
    counts: dict[str, int] = {}
    moved: dict[str, int] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        if not start <= event["ts"] <= end:
            continue
        args = event.get("args", {})
        op = str(args.get("op_name", "?"))
        micros[op] = micros.get(op, 0.0) + float(event["dur"])
        counts[op] = counts.get(op, 0) + 1
        if op not in VIEW_OPS:
            moved[op] = moved.get(op, 0) + _tensor_bytes(args.get("input_type_shape"))
            moved[op] += _tensor_bytes(args.get("output_type_shape"))
    operators = sorted(
        (OperatorTime(op, us / 1000, counts[op], moved.get(op, 0)) for op, us in micros.items()),
        key=lambda o: (-o.ms, o.op_type),
    )
    return OperatorBreakdown(tuple(operators), run_ms=last["dur"] / 1000)


# Element sizes of the type names ONNX Runtime's profiler writes in ``input_type_shape`` / ``output_type_shape``.
_ELEMENT_BYTES: dict[str, int] = {
    "float": 4,
    "float16": 2,
    "bfloat16": 2,
    "double": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "uint16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}


def _tensor_bytes(tensors: Any) -> int:
    """Bytes of the tensors a profiler event lists (``[{"float": [1, 3, 768, 768]}, ...]``); unknown types count 4."""
    total = 0
    for tensor in tensors or []:
        for element, shape in dict(tensor).items():
            count = 1
            for dim in shape:
                count *= int(dim)
            total += count * _ELEMENT_BYTES.get(str(element), 4)
    return total


def profile_vision_encoder(model_dir: Path, variant: str, provider: str = "cpu", threads: int = 0) -> dict[str, Any]:
    """Profile the vision encoder of ``variant`` in this process, as the engine would open it (see the module
    docstring). Returns the breakdown and the run's wall times in ms."""
    import numpy as np

    from runtime.engine.onnxruntime_backend import choose_providers, open_graph, release_free_heap, session_options
    from runtime.engine.settings import EngineSettings
    from runtime.florence2.configs import ImageConfig, read_json
    from runtime.model_folder import VISION_ENCODER

    settings = EngineSettings(provider=provider, variant=variant, intra_op_threads=threads)  # type: ignore[arg-type]
    image = ImageConfig.from_dict(read_json(model_dir / "preprocessor_config.json"))
    with tempfile.TemporaryDirectory(prefix="florence-vision-profile-") as scratch:
        options = session_options(settings, VISION_ENCODER)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "vision")
        started = time.perf_counter()
        providers = choose_providers(settings.provider, settings.device_id)
        graph = open_graph(model_dir / "onnx", VISION_ENCODER, settings, providers, options)
        load_s = time.perf_counter() - started
        # The values do not change the work; standard normal is what normalised pixels look like.
        pixels = np.random.default_rng(0).standard_normal((1, 3, image.height, image.width), dtype=np.float32)
        started = time.perf_counter()
        graph.run({PIXEL_VALUES: pixels})  # warm-up
        warmup_s = time.perf_counter() - started
        release_free_heap()
        mark = ProcHighWaterMark(os.getpid())
        resident, reset_failure = psutil.Process().memory_info().rss, mark.reset()
        started = time.perf_counter()
        graph.run({PIXEL_VALUES: pixels})
        wall_s = time.perf_counter() - started
        peak = mark.read()
        profile_path = Path(graph.session.end_profiling())
        try:
            events = json.loads(profile_path.read_text())
        finally:
            profile_path.unlink(missing_ok=True)
    return {
        "variant": variant,
        "graph": graph.path.name,
        "providers": graph.session.get_providers(),
        "threads": threads,
        "image_size": [image.height, image.width],
        "load_s": load_s,
        "warmup_ms": 1000 * warmup_s,
        "wall_ms": 1000 * wall_s,
        # What one run needs besides the loaded graph (activations, in the engine's arena): the high-water mark of
        # the profiled run over the resident set before it.
        "activation_peak_bytes": None if reset_failure or peak is None else max(peak - resident, 0),
        **parse_profile(events).to_dict(),
    }


def profile_in_child(
    model_dir: Path, variant: str, log_path: Path, *, provider: str = "cpu", threads: int = 0, timeout_s: float
) -> dict[str, Any]:
    """``profile_vision_encoder`` in a child process under the benchmark's memory guard; its stderr goes to
    ``log_path``, whose tail is quoted when it fails."""
    command = [
        sys.executable, "-m", "bench.vision_profile", str(model_dir),
        "--variant", variant, "--provider", provider, "--threads", str(threads),
    ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        watch = MemoryWatch(psutil.Process(child.pid), DEFAULT_FLOOR_BYTES)
        try:
            stdout, _ = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise ProfileFailed(f"profiling the {variant} vision encoder took over {timeout_s:.0f} s") from None
        finally:
            peak = watch.stop()
    answer = _last_json_line(stdout)
    if child.returncode != 0 or "error" in answer or not answer:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        reason = watch.killed_because or answer.get("error") or tail
        raise ProfileFailed(f"profiling the {variant} vision encoder failed (exit code {child.returncode}): {reason}")
    return {**answer, "peak_rss_bytes": peak}


def _last_json_line(stdout: str) -> dict[str, Any]:
    """The child's answer: its last line (a library may have printed before it); empty when there is none."""
    lines = stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return answer if isinstance(answer, dict) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vision_profile", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: ONNX Runtime's default")
    args = parser.parse_args(argv)
    try:
        result = profile_vision_encoder(args.model_dir, args.variant, args.provider, args.threads)
    except Exception as exc:  # answered to the parent, which records it in the results and goes on
        traceback.print_exc()
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
