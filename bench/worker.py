"""One contender in its own process, driven over stdin/stdout, one JSON object per line.

    python -m bench.worker torch CHECKPOINT_DIR [--precision fp32|bf16]
    python -m bench.worker engine MODEL_DIR --variant int8 [--provider cpu|cuda|auto] [--backend B --precision P]
    python -m bench.worker openvino MODEL_DIR [--precision f32|bf16]      # the vision encoder graph alone

The worker loads its model, warms it up and says ``{"event": "ready", ...}``; then each line it reads is a job
(``{"max_new_tokens": 20, "num_beams": 1}``) answered with ``{"event": "result", ...}``, until ``{"quit": true}``,
answered with its peak resident memory. Libraries that print are sent to stderr, so stdout carries only the
protocol. A failure is answered ``{"event": "error", "message": ...}`` and the worker stays up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

from bench.measurement import Runner
from bench.workload import Job


def peak_rss_bytes() -> int:
    """This process's resident high-water mark. ``VmHWM`` starts afresh at exec; ``ru_maxrss`` would not (it
    keeps the parent's peak across fork and exec), so it is only the fallback where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def current_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _protocol_stream() -> IO[str]:
    """A private copy of stdout for the protocol; fd 1 then points at stderr for whatever else prints."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return stream


def torch_device(provider: str) -> str:
    """The reference runs where the engine runs when this torch build can (a CPU build cannot use a GPU)."""
    if provider == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_runner(args: argparse.Namespace) -> Runner:
    if args.kind == "torch":
        from bench.torch_runner import TorchRunner

        return TorchRunner(
            args.path, threads=args.threads, device=torch_device(args.provider), precision=args.precision or "fp32"
        )
    if args.kind == "openvino":
        from bench.openvino_vision import OpenVinoVisionRunner

        return OpenVinoVisionRunner(args.path, precision=args.precision or "f32", threads=args.threads)
    from bench.engine_runner import EngineRunner

    return EngineRunner(
        args.path,
        variant=args.variant,
        provider=args.provider,
        threads=args.threads,
        backend=args.backend,
        precision=args.precision,
    )


def serve(runner: Runner, lines: IO[str], out: IO[str], ready: dict[str, Any]) -> None:
    def say(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    say({"event": "ready", **ready})
    for line in lines:
        request = json.loads(line)
        if request.get("quit"):
            break
        try:
            measurement = runner.run(Job(int(request["max_new_tokens"]), int(request["num_beams"])))
        except Exception as exc:  # a failed job is reported to the orchestrator, which records it and goes on
            traceback.print_exc()
            say({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
            continue
        say({"event": "result", **measurement.to_dict()})
    say({"event": "bye", "peak_rss_bytes": peak_rss_bytes(), "rss_bytes": current_rss_bytes()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("kind", choices=("torch", "engine", "openvino"))
    parser.add_argument("path", type=Path, help="checkpoint folder (torch) or model folder (engine)")
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0: the library's default")
    parser.add_argument("--backend", help="engine: EngineSettings.backend")
    parser.add_argument("--precision", help="torch: fp32 | bf16; engine, openvino: f32 | bf16")
    args = parser.parse_args(argv)
    out = _protocol_stream()
    started = time.perf_counter()
    try:
        runner = make_runner(args)
        loaded = time.perf_counter()
        runner.warm_up()
    except Exception as exc:  # reported as the worker's answer: the orchestrator skips this contender
        traceback.print_exc()
        out.write(json.dumps({"event": "error", "message": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 1
    ready = {
        "device": runner.device_name,
        "load_s": loaded - started,
        "warmup_s": time.perf_counter() - loaded,
        "rss_after_load_bytes": current_rss_bytes(),
    }
    serve(runner, sys.stdin, out, ready)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
