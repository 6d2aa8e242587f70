"""What this machine can do at best, measured in the same run as the contenders: matmul rate and memory bandwidth.

The floors of the report divide a stage's work by these rates, so each rate is the best of several repeats (the
fastest the machine demonstrated, which makes the floor a lower bound):

- matmul GFLOP/s: fp32 ``A[M,K] @ B[K,N]`` through ONNX Runtime (a one-node MatMul graph, default threads) and
  through numpy (its BLAS), for shapes the model's linear layers have.
- memory read GB/s: a numpy sum over an array far larger than the caches, split over one thread per core (numpy
  releases the GIL in reductions), so that every core's load path is used as the decoder's matmuls use it; and
  ONNX Runtime's ReduceSum over the same amount of data, which on a GPU measures the GPU's memory.

The ONNX Runtime probes keep every operand in initializers and reduce the result to a scalar, so that no
host-device copy is timed; graph optimisations are off so that constant folding cannot precompute them.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")
MATMUL_SHAPES: tuple[tuple[int, int, int], ...] = ((577, 1024, 4096), (2304, 1024, 1024), (1024, 1024, 1024))


@dataclass(frozen=True)
class MachineRates:
    ort_matmul_gflops: float  # fp32, on the execution provider under test
    numpy_matmul_gflops: float  # fp32, host BLAS
    ort_fp16_matmul_gflops: float | None  # measured only where fp16 is a contender (GPU)
    numpy_memory_read_gbps: float  # host memory, one thread per core
    ort_memory_read_gbps: float  # memory of the device the provider runs on
    memory_copy_gbps: float  # host memory, bytes read plus bytes written per second
    cores: int
    providers: tuple[str, ...]
    # The other precisions the contenders compute in (None: not measured; ``skipped`` says why).
    torch_matmul_gflops: float | None = None  # fp32
    torch_bf16_matmul_gflops: float | None = None
    openvino_bf16_matmul_gflops: float | None = None  # a one-MatMul graph compiled with the bf16 hint
    ort_int8_matmul_gops: float | None = None  # MatMulInteger, uint8 x int8 -> int32
    torch_int8_matmul_gops: float | None = None  # torch._int_mm
    skipped: tuple[tuple[str, str], ...] = ()  # (probe, why not measured)

    @property
    def matmul_gflops(self) -> float:
        """The best fp32 matmul rate measured on the device under test."""
        if self.on_gpu:
            return self.ort_matmul_gflops
        return max(self.ort_matmul_gflops, self.numpy_matmul_gflops, self.torch_matmul_gflops or 0.0)

    def matmul_rate(self, precision: str) -> float | None:
        """The best matmul rate (GFLOP/s, GOP/s for int8) measured at ``precision`` (fp32, bf16, fp16, int8), or
        None when no probe of that precision ran."""
        if precision == "fp32":
            return self.matmul_gflops
        found = {
            "bf16": (self.torch_bf16_matmul_gflops, self.openvino_bf16_matmul_gflops),
            "fp16": (self.ort_fp16_matmul_gflops,),
            "int8": (self.ort_int8_matmul_gops, self.torch_int8_matmul_gops),
        }.get(precision, ())
        values = [v for v in found if v]
        return max(values) if values else None

    @property
    def memory_read_gbps(self) -> float:
        """The best read bandwidth measured on the device under test."""
        if self.on_gpu:
            return self.ort_memory_read_gbps
        return max(self.ort_memory_read_gbps, self.numpy_memory_read_gbps)

    @property
    def on_gpu(self) -> bool:
        return any(p != "CPUExecutionProvider" for p in self.providers)

    def to_dict(self) -> dict[str, object]:
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("providers", "skipped")},
            "providers": list(self.providers),
            "skipped": dict(self.skipped),
            "matmul_gflops": self.matmul_gflops,
            "matmul_rate_by_precision": {p: self.matmul_rate(p) for p in PRECISIONS},
            "memory_read_gbps": self.memory_read_gbps,
        }


def best_of(runs: list[MachineRates]) -> MachineRates:
    """Each rate at its best over several measurements (e.g. before and after the contenders): on a shared
    machine a probe that ran while something else did is slow, and a floor must not be."""

    def top(name: str) -> float | None:
        values = [getattr(r, name) for r in runs if getattr(r, name) is not None]
        return max(values) if values else None

    return MachineRates(
        ort_matmul_gflops=top("ort_matmul_gflops") or 0.0,
        numpy_matmul_gflops=top("numpy_matmul_gflops") or 0.0,
        ort_fp16_matmul_gflops=top("ort_fp16_matmul_gflops"),
        numpy_memory_read_gbps=top("numpy_memory_read_gbps") or 0.0,
        ort_memory_read_gbps=top("ort_memory_read_gbps") or 0.0,
        memory_copy_gbps=top("memory_copy_gbps") or 0.0,
        cores=runs[0].cores,
        providers=runs[0].providers,
        torch_matmul_gflops=top("torch_matmul_gflops"),
        torch_bf16_matmul_gflops=top("torch_bf16_matmul_gflops"),
        openvino_bf16_matmul_gflops=top("openvino_bf16_matmul_gflops"),
        ort_int8_matmul_gops=top("ort_int8_matmul_gops"),
        torch_int8_matmul_gops=top("torch_int8_matmul_gops"),
        skipped=tuple(dict(item for r in runs for item in r.skipped).items()),
    )


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # first touch: page faults, thread pools, kernel selection
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def numpy_matmul_gflops(shapes: tuple[tuple[int, int, int], ...] = MATMUL_SHAPES, repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    best = 0.0
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        best = max(best, 2.0 * m * k * n / _best_seconds(lambda a=a, b=b: a @ b, repeats) / 1e9)
    return best


def _session(
    nodes: list,
    output: str,
    initializers: dict[str, np.ndarray],
    providers: tuple[str, ...],
    output_dtype: type | None = None,
) -> object:
    """A session over a graph whose operands are all initializers, so nothing crosses the host-device boundary
    per run but a scalar; graph optimisations are off so that constant folding cannot precompute the result."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(output_dtype or next(iter(initializers.values())).dtype))
    graph = helper.make_graph(
        nodes,
        "probe",
        [],
        [helper.make_tensor_value_info(output, elem, [])],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=list(providers or ("CPUExecutionProvider",))
    )


def ort_matmul_gflops(
    shapes: tuple[tuple[int, int, int], ...] = MATMUL_SHAPES,
    repeats: int = 5,
    providers: tuple[str, ...] = (),
    dtype: type = np.float32,
) -> float:
    """``sum(A @ B)``: the sum reads M*N values once, a few percent of the matmul's time at these shapes."""
    rng = np.random.default_rng(0)
    return _ort_matmul_rate(
        "MatMul",
        lambda m, k, n: (rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)),
        None,  # the operands' type
        shapes,
        repeats,
        providers,
    )


def ort_int8_matmul_gops(
    shapes: tuple[tuple[int, int, int], ...] = MATMUL_SHAPES, repeats: int = 5, providers: tuple[str, ...] = ()
) -> float:
    """``sum(MatMulInteger(A uint8, B int8))``: the kernel ONNX Runtime's dynamically quantized matmuls use
    (two integer operations per multiply-add, counted as FLOPs are)."""
    rng = np.random.default_rng(0)
    return _ort_matmul_rate(
        "MatMulInteger",
        lambda m, k, n: (rng.integers(0, 255, (m, k), dtype=np.uint8), rng.integers(-127, 127, (k, n), dtype=np.int8)),
        np.int32,
        shapes,
        repeats,
        providers,
    )


def _ort_matmul_rate(
    op: str,
    operands: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]],
    output_dtype: type | None,
    shapes: tuple[tuple[int, int, int], ...],
    repeats: int,
    providers: tuple[str, ...],
) -> float:
    """The best rate (G operations/s, two a multiply-add) of a one-``op`` graph summed to a scalar, over ``shapes``."""
    from onnx import helper

    best = 0.0
    for m, k, n in shapes:
        nodes = [helper.make_node(op, ["a", "b"], ["c"]), helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0)]
        a, b = operands(m, k, n)
        session = _session(nodes, "s", {"a": a, "b": b}, providers, output_dtype=output_dtype)
        seconds = _best_seconds(lambda session=session: session.run(None, {}), repeats)
        best = max(best, 2.0 * m * k * n / seconds / 1e9)
    return best


class ProbeSkipped(RuntimeError):
    """A probe that was not run or gave up; its message says why, for the report."""


# A precision the CPU only emulates runs far below fp32 (bf16 without AMX or AVX-512 BF16: 0.2-0.7 GFLOP/s on a
# 2-core AVX2 machine where fp32 reaches 10-30); a probe under this fraction of numpy's fp32 rate on the same small
# matmul, measured just before it, stops before the large shapes, which would take minutes. Both are the best of a
# few runs, so that a busy machine slows both alike.
EMULATED_FRACTION = 0.1
SLOW_PROBE_S = 2.0  # one run of a probe shape (at most 4.8 GFLOP) takes under 0.3 s on any matmul unit


def _guard_emulated(fn: Callable[[], object], what: str, size: int = 256, rounds: int = 10) -> None:
    """Raise ProbeSkipped when ``fn`` (a ``size``^3 matmul) stays under ``EMULATED_FRACTION`` of numpy's fp32 rate.
    The two alternate and each keeps its best, and the probe passes as soon as it once comes within the fraction:
    on a busy machine a run can stall, but an emulated precision never comes close."""
    a = np.ones((size, size), dtype=np.float32)
    fn()
    a @ a  # first touch
    reference = candidate = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        a @ a
        reference = min(reference, time.perf_counter() - started)
        started = time.perf_counter()
        fn()
        candidate = min(candidate, time.perf_counter() - started)
        if reference / candidate >= EMULATED_FRACTION:
            return
    flops = 2 * size**3
    raise ProbeSkipped(
        f"{what}: {flops / candidate / 1e9:.2f} GFLOP/s on a {size}^3 matmul against {flops / reference / 1e9:.1f} "
        "in fp32 (numpy): emulated"
    )


def torch_matmul_gflops(
    dtype_name: str, shapes: tuple[tuple[int, int, int], ...] = MATMUL_SHAPES, repeats: int = 5
) -> float:
    """``A @ B`` in torch at ``dtype_name`` (float32, bfloat16), or ``torch._int_mm`` for int8 (GOP/s)."""
    try:
        import torch
    except ImportError:
        raise ProbeSkipped("torch is not installed") from None
    if dtype_name == "int8":
        if not hasattr(torch, "_int_mm"):
            raise ProbeSkipped("this torch has no _int_mm")

        def operands(m: int, k: int, n: int) -> tuple[Any, Any]:
            return (
                torch.randint(-127, 127, (m, k), dtype=torch.int8),
                torch.randint(-127, 127, (k, n), dtype=torch.int8),
            )

        multiply: Callable[[Any, Any], object] = torch._int_mm
    else:
        dtype = getattr(torch, dtype_name)

        def operands(m: int, k: int, n: int) -> tuple[Any, Any]:
            return torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)

        multiply = torch.matmul
    with torch.inference_mode():
        if dtype_name != "float32":  # fp32 is the yardstick, never emulated
            a, b = operands(256, 256, 256)
            _guard_emulated(lambda: multiply(a, b), f"torch {dtype_name}")
        best = 0.0
        for m, k, n in shapes:
            a, b = operands(m, k, n)
            if dtype_name != "float32":  # the guard can be fooled by a stalled fp32 run; one slow large run cannot
                started = time.perf_counter()
                multiply(a, b)
                took = time.perf_counter() - started
                if took > SLOW_PROBE_S:
                    raise ProbeSkipped(
                        f"torch {dtype_name}: {2.0 * m * k * n / took / 1e9:.2f} GFLOP/s on {m}x{k}x{n}, "
                        f"{took:.1f} s a run: emulated or without a fast kernel here"
                    )
            best = max(best, 2.0 * m * k * n / _best_seconds(lambda a=a, b=b: multiply(a, b), repeats) / 1e9)
    return best


def openvino_matmul_gflops(
    precision: str, shapes: tuple[tuple[int, int, int], ...] = MATMUL_SHAPES, repeats: int = 5
) -> float:
    """One MatMul (input A times a constant B) in OpenVINO, compiled with ``INFERENCE_PRECISION_HINT`` set to
    ``precision`` (f32, bf16): the rate OpenVINO reaches on this CPU at that precision."""
    try:
        import openvino
    except ImportError:
        raise ProbeSkipped("openvino is not installed") from None
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    core = openvino.Core()
    best = 0.0
    for m, k, n in shapes:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "probe",
            [helper.make_tensor_value_info("a", 1, [m, k])],
            [helper.make_tensor_value_info("c", 1, [m, n])],
            initializer=[numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        with tempfile.TemporaryDirectory(prefix="florence-ov-probe-") as scratch:
            path = Path(scratch) / "matmul.onnx"
            path.write_bytes(model.SerializeToString())
            compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": precision})
        request = compiled.create_infer_request()
        a = rng.standard_normal((m, k)).astype(np.float32)
        best = max(best, 2.0 * m * k * n / _best_seconds(lambda r=request, a=a: r.infer({0: a}), repeats) / 1e9)
    return best


def ort_memory_read_gbps(megabytes: int = 512, repeats: int = 5, providers: tuple[str, ...] = ()) -> float:
    """ONNX Runtime's ReduceSum over an initializer: the read bandwidth of the device the provider runs on."""
    from onnx import helper

    data = np.ones(megabytes * 1024 * 1024 // 4, dtype=np.float32)
    session = _session([helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0)], "s", {"x": data}, providers)
    return data.nbytes / _best_seconds(lambda: session.run(None, {}), repeats) / 1e9


def memory_gbps(megabytes: int = 512, repeats: int = 5) -> tuple[float, float]:
    """(read GB/s, copy GB/s) over ``megabytes`` of float32, one thread per core."""
    cores = os.cpu_count() or 1
    src = np.ones(megabytes * 1024 * 1024 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    src_parts = np.array_split(src, cores)
    dst_parts = np.array_split(dst, cores)
    with ThreadPoolExecutor(cores) as pool:
        read = _best_seconds(lambda: list(pool.map(np.sum, src_parts)), repeats)
        copy = _best_seconds(lambda: list(pool.map(np.copyto, dst_parts, src_parts)), repeats)
    return src.nbytes / read / 1e9, 2 * src.nbytes / copy / 1e9


def measure(
    memory_megabytes: int = 512,
    repeats: int = 5,
    providers: tuple[str, ...] = (),
    skip: Mapping[str, str] | None = None,
) -> MachineRates:
    """Every rate; a probe named in ``skip`` (``torch_bf16``, ``openvino_bf16``, ``torch_int8``, ...) is left out
    with its reason, as is one that finds its precision emulated or its library missing."""
    providers = providers or ("CPUExecutionProvider",)
    on_gpu = any(p != "CPUExecutionProvider" for p in providers)
    shapes = (*MATMUL_SHAPES, (4096, 4096, 4096)) if on_gpu else MATMUL_SHAPES  # a GPU needs more work to peak
    skipped: dict[str, str] = dict(skip or {})
    optional: dict[str, Callable[[], float]] = {
        "torch_fp32": lambda: torch_matmul_gflops("float32", repeats=repeats),
        "torch_bf16": lambda: torch_matmul_gflops("bfloat16", repeats=repeats),
        "openvino_bf16": lambda: openvino_matmul_gflops("bf16", repeats=repeats),
        "ort_int8": lambda: ort_int8_matmul_gops(repeats=repeats),
        "torch_int8": lambda: torch_matmul_gflops("int8", repeats=repeats),
    }
    measured: dict[str, float | None] = {}
    for name, probe in optional.items():
        if on_gpu or name in skipped:
            continue
        try:
            measured[name] = probe()
        except ProbeSkipped as exc:
            skipped[name] = str(exc)
    read, copy = memory_gbps(memory_megabytes, repeats)
    return MachineRates(
        torch_matmul_gflops=measured.get("torch_fp32"),
        torch_bf16_matmul_gflops=measured.get("torch_bf16"),
        openvino_bf16_matmul_gflops=measured.get("openvino_bf16"),
        ort_int8_matmul_gops=measured.get("ort_int8"),
        torch_int8_matmul_gops=measured.get("torch_int8"),
        skipped=tuple(skipped.items()),
        ort_matmul_gflops=ort_matmul_gflops(shapes, repeats, providers),
        numpy_matmul_gflops=numpy_matmul_gflops(repeats=repeats),
        ort_fp16_matmul_gflops=ort_matmul_gflops(shapes, repeats, providers, np.float16) if on_gpu else None,
        numpy_memory_read_gbps=read,
        ort_memory_read_gbps=ort_memory_read_gbps(memory_megabytes, repeats, providers),
        memory_copy_gbps=copy,
        cores=os.cpu_count() or 1,
        providers=tuple(providers),
    )
