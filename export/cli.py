"""``python -m export SOURCE --out MODEL_DIR``: export a Florence-2 checkpoint to an ONNX model folder."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from export.errors import ExportError
from export.known_warnings import silence_known_warnings
from runtime.model_folder import EXPORT_DTYPES

EXIT_CODES = """exit status:
  0  exported (and validated unless --no-validate)
  1  tracing, merging or converting a graph failed
  2  the source is missing, unreachable or not Florence-2, or --out is not empty (see --force)
  3  the export extra is missing: pip install -e '.[export]'
  4  not enough free disk space for the estimated export
  5  validation against PyTorch failed: a parity check (the message names the graph and the difference),
     or the checks could not run; the folder is left without export.json"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a Florence-2 checkpoint (local folder or Hugging Face hub id; native transformers or "
        "original remote-code format) to an ONNX model folder, validated against PyTorch.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="checkpoint folder, or hub id such as microsoft/Florence-2-large")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument(
        "--dtype",
        action="append",
        choices=EXPORT_DTYPES,
        help="graph variants to write; repeatable (default fp32; fp32 is always written)",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip parity checks against PyTorch")
    parser.add_argument("--force", action="store_true", help="replace the content of a non-empty --out folder")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) when SOURCE is a hub id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_progress()
    try:
        from export.exporter import export_model

        with contextlib.suppress(ImportError):  # without transformers, export_model says what to install
            silence_known_warnings()
        record = export_model(
            args.source,
            args.out,
            dtypes=tuple(args.dtype or ("fp32",)),
            validate=not args.no_validate,
            force=args.force,
            opset=args.opset,
            revision=args.revision,
        )
    except ExportError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(summary(record, args.out))
    return 0


class _ProgressHandler(logging.Handler):
    """Progress lines on whatever ``sys.stderr`` is at the time (it may be replaced, as tests do)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def _show_progress() -> None:
    log = logging.getLogger("export")
    if not any(isinstance(h, _ProgressHandler) for h in log.handlers):
        log.addHandler(_ProgressHandler())
    log.setLevel(logging.INFO)
    log.propagate = False


def summary(record: dict, out: Path) -> str:
    total = sum(record["files"].values())
    lines = [f"exported {record['source']} ({record['source_format']}) to {out} in {record['export_seconds']}s"]
    lines.append(f"  dtypes {', '.join(record['dtypes'])}; {total / 2**20:.1f} MiB in {len(record['files'])} files")
    parity = record.get("parity")
    if parity:
        from export.validate import FP32_TOLERANCE as tol  # validation ran, so its dependencies are there

        worst = max(g["max_abs_diff"] for g in parity["fp32"]["graphs"].values())
        gen = parity["fp32"]["generation"]
        ties = len(gen["near_tie_divergences"])
        lines.append(
            f"  fp32 graphs: max abs diff to PyTorch {worst:.2e} (bound {tol.atol:g} + {tol.rtol:g} x the output's "
            "largest value); "
            f"greedy: {gen['token_exact']}/{gen['sequences']} token-exact"
            + (f", {ties} parted at a near tie (allowed)" if ties else "")
        )
        for dtype in record["dtypes"]:
            if dtype != "fp32":
                cosines = parity[dtype]["min_cosine_vs_fp32_graph"]
                bounds = parity[dtype].get("bounds", {})
                figures = ", ".join(
                    f"{g} {c:.4f}" + (f" >= {bounds[g]}" if g in bounds else "") for g, c in cosines.items()
                )
                lines.append(f"  {dtype}: least cosine to the fp32 graph per graph, with its bound: {figures}")
        lines.append(
            "  validation passed: every figure is within its bound (reduced precision scores lowest on random "
            "weights; export/validate.py says why each bound is where it is)"
        )
    else:
        lines.append("  not validated (--no-validate)")
    return "\n".join(lines)
