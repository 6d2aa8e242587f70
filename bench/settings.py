"""The benchmark's settings, read once from the command line into one frozen dataclass.

``--quick`` is a smoke run for CI (tiny architecture, few tokens, one round, written to build/bench-quick unless
``--out`` says otherwise); the default run measures the real
Florence-2-large architecture with random weights. Every count has a flag so that a run fits the time at hand.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.artefacts import VARIANTS
from bench.configurations import BF16_MODES
from bench.workload import Job

RESULTS = Path("bench/results")  # make bench: results kept beside the code
QUICK_RESULTS = Path("build/bench-quick")  # make bench-quick: a smoke run, never beside the kept results


@dataclass(frozen=True)
class BenchSettings:
    arch: str
    quick: bool
    out: Path
    checkpoint: Path
    model_dir: Path
    export_dtypes: tuple[str, ...]
    complete_export: bool  # export again when the model folder lacks one of export_dtypes
    variants: tuple[str, ...] | None  # None: every variant the model folder has (fp16 only on a GPU)
    provider: str  # cpu | cuda
    threads: int  # intra-op threads per contender; 0: each library's default
    tokens: tuple[int, ...]
    beams: tuple[int, ...]
    rounds: int
    load_timeout_s: float
    job_timeout_s: float
    concurrency: tuple[int, ...]
    server_tokens: int
    server_requests: int  # per concurrency level, at least one per client
    server_seconds: float  # per level: no new request starts after this
    overhead_requests: int
    memory_probe_mb: int
    side_by_side: bool
    server: bool
    vision_profile: bool  # the vision encoder's kernel time by operator type (bench/vision_profile.py)
    server_variant: str | None  # None: fp32 where the folder has it
    ray: bool  # the Ray row (bench/ray_row.py), when the ray extra is installed
    bf16: str = "auto"  # bf16 contenders: auto (where the CPU has a bf16 unit), always, never
    # OpenVINO on the vision encoder graph alone, f32 and bf16: opt-in, since the engine's OpenVINO configurations
    # run the same graph (their vision stage), and one more process holding the large model's vision encoder (4 GiB
    # with OpenVINO) beside them would not fit a 24 GiB machine
    openvino_vision: bool = False

    @property
    def jobs(self) -> tuple[Job, ...]:
        return tuple(Job(tokens, beams) for beams in self.beams for tokens in self.tokens)

    @property
    def headline(self) -> Job:
        """The job the end-to-end targets speak of: the fewest tokens, greedy, batch 1."""
        return Job(min(self.tokens), 1)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one integer, each at least 1")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Side-by-side benchmark of the ONNX Runtime engine against PyTorch eager, floors of this "
        "machine, and the HTTP server under concurrent load; writes JSON, markdown and a plot.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, few tokens, one round")
    parser.add_argument("--arch", choices=("large", "tiny"), help="architecture (default large; tiny with --quick)")
    parser.add_argument(
        "--out", type=Path, help=f"folder for the results (default {RESULTS}; {QUICK_RESULTS} with --quick)"
    )
    parser.add_argument("--checkpoint", type=Path, help="checkpoint folder (default checkpoints/<arch>)")
    parser.add_argument("--model-dir", type=Path, help="model folder (default models/<arch>-random)")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--variants", type=_names, help="engine variants to run (default: all in the folder)")
    parser.add_argument(
        "--export-dtype",
        action="append",
        choices=VARIANTS,
        help="variants the model folder must have (repeatable; default fp32 and int8, and an existing folder is "
        "reused as it is); given, a folder that lacks one is exported again",
    )
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads per contender (0: default)")
    parser.add_argument("--tokens", type=_ints, help="new tokens per job, EOS ignored (default 20,128)")
    parser.add_argument("--beams", type=_ints, help="beam counts (default 1,3)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 2; 1 with --quick)")
    parser.add_argument("--concurrency", type=_ints, help="concurrent HTTP clients (default 1,4,8,16)")
    parser.add_argument("--server-tokens", type=int, help="max_tokens of the load requests (default 128)")
    parser.add_argument("--server-requests", type=int, help="requests per concurrency level, at least one per client")
    parser.add_argument("--server-seconds", type=float, help="time bound per concurrency level")
    parser.add_argument("--overhead-requests", type=int, help="sequential max_tokens=1 requests for the overhead")
    parser.add_argument("--server-variant", choices=VARIANTS, help="variant the server loads (default fp32)")
    parser.add_argument("--no-side-by-side", action="store_true", help="skip the contenders")
    parser.add_argument("--no-server", action="store_true", help="skip the HTTP load test")
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the vision encoder's profile by operator type (fp32, int8)"
    )
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row (Ray Serve against the direct server)")
    parser.add_argument(
        "--bf16",
        choices=BF16_MODES,
        default="auto",
        help="bf16 contenders (PyTorch, OpenVINO): auto runs them where the CPU has AMX or AVX-512 BF16 and skips "
        "them elsewhere, where they would be emulated and take many times as long as fp32",
    )
    parser.add_argument(
        "--openvino-vision", action="store_true", help="also time OpenVINO on the vision graph alone (f32, bf16)"
    )
    return parser


def from_args(argv: list[str] | None = None) -> BenchSettings:
    args = build_parser().parse_args(argv)
    quick = bool(args.quick)
    arch = args.arch or ("tiny" if quick else "large")
    small = quick or arch == "tiny"
    on_gpu = args.provider == "cuda"

    def pick(value: Any, quick_value: Any, full_value: Any) -> Any:
        return value if value is not None else (quick_value if quick else full_value)

    default_model = Path("models/tiny") if arch == "tiny" else Path(f"models/{arch}-random")
    return BenchSettings(
        arch=arch,
        quick=quick,
        out=args.out or (QUICK_RESULTS if quick else RESULTS),
        checkpoint=args.checkpoint or Path(f"checkpoints/{arch}"),
        model_dir=args.model_dir or default_model,
        export_dtypes=tuple(args.export_dtype or (("fp32", "fp16", "int8") if on_gpu else ("fp32", "int8"))),
        complete_export=bool(args.export_dtype),
        variants=args.variants,
        provider=args.provider,
        threads=args.threads,
        tokens=pick(args.tokens, (8, 16), (20, 128)),
        beams=pick(args.beams, (1, 3), (1, 3)),
        rounds=pick(args.rounds, 1, 2),
        load_timeout_s=120.0 if small else 900.0,
        job_timeout_s=120.0 if small else 900.0,
        concurrency=pick(args.concurrency, (1, 4, 8, 16), (1, 4, 8, 16)),
        server_tokens=pick(args.server_tokens, 16, 128),
        server_requests=pick(args.server_requests, 16, 8),
        server_seconds=pick(args.server_seconds, 15.0, 60.0),
        overhead_requests=pick(args.overhead_requests, 5, 8),
        memory_probe_mb=128 if quick else 512,
        side_by_side=not args.no_side_by_side,
        server=not args.no_server,
        vision_profile=not args.no_profile,
        server_variant=args.server_variant,
        ray=not args.no_ray,
        bf16=args.bf16,
        openvino_vision=args.openvino_vision,
    )
