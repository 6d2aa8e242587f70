"""``python -m export.add_variant MODEL_DIR --checkpoint CKPT --dtype q4``: add a variant that converts only the
decoder (its other graphs are copies of another variant's) to an exported folder without tracing again; validated
like the exporter's variants and recorded in ``export.json``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.transformers_js import write_transformers_js_keys
from runtime.model_folder import EXPORT_DTYPES, GRAPHS, SHARED_GRAPHS, file_name, requires

log = logging.getLogger("export")


def add_variant(model_dir: Path, checkpoint: Path, dtype: str, *, validate: bool = True) -> dict[str, Any]:
    """Write ``dtype``'s merged decoder into ``model_dir`` from its fp32 one; returns the updated ``export.json``."""
    from export import folder, variants

    record_path = model_dir / "export.json"
    if not record_path.is_file():
        raise ExportError(f"{record_path} is missing; export the model first (python -m export SOURCE --out DIR)")
    record = json.loads(record_path.read_text())
    missing = [d for d in requires(dtype) if d not in record["dtypes"]]
    if missing:
        raise ExportError(f"{dtype} reads the {', '.join(missing)} graphs, which {model_dir} lacks; export them first")
    started = time.perf_counter()
    variants.write_decoder_variant(dtype, model_dir / "onnx")
    record.setdefault("timings_seconds", {})[f"variant_{dtype}"] = round(time.perf_counter() - started, 2)
    record["dtypes"] = [d for d in EXPORT_DTYPES if d in {*record["dtypes"], dtype}]
    record["graphs"][dtype] = {g: f"onnx/{file_name(g, dtype)}" for g in GRAPHS}
    if validate and record.get("parity"):
        record["parity"][dtype] = _validate(model_dir, checkpoint, dtype)[dtype]
    write_transformers_js_keys(model_dir)
    record["files"] = folder.file_sizes(model_dir)
    folder.write_json(record_path, record)
    return record


def _validate(model_dir: Path, checkpoint: Path, dtype: str) -> dict[str, Any]:
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    from export.greedy import open_sessions
    from export.validate import validate_variants

    model = Florence2ForConditionalGeneration.from_pretrained(
        checkpoint, attn_implementation="eager", dtype=torch.float32
    ).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    return validate_variants(model, processor, open_sessions(model_dir, "fp32"), model_dir, [dtype])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.add_variant", description=__doc__)
    parser.add_argument("model_dir", type=Path, help="an exported model folder (with export.json)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint it was exported from")
    parser.add_argument("--dtype", required=True, choices=sorted(SHARED_GRAPHS), help="the variant to add")
    parser.add_argument("--no-validate", action="store_true", help="skip the comparison with fp32 and PyTorch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record = add_variant(args.model_dir, args.checkpoint, args.dtype, validate=not args.no_validate)
    except ExportError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(record.get("parity", {}) and record["parity"].get(args.dtype), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
