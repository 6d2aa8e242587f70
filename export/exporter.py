"""``export_model``: a Florence-2 checkpoint in, a validated model folder out (see ARCHITECTURE.md)."""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from export.errors import ExportError, GraphExportFailed, MissingExportExtra, ValidationFailed
from export.source import CheckpointFormat, detect_format, read_config, resolve
from export.transformers_js import write_transformers_js_keys
from runtime.model_folder import DECODER_NO_PAST, DECODER_WITH_PAST, EXPORT_DTYPES, GRAPHS, file_name, requires

log = logging.getLogger("export")

_REQUIRED_MODULES = ("torch", "transformers", "onnx", "onnxruntime", "optimum.onnx", "safetensors")
_VERSIONED = ("torch", "transformers", "onnx", "onnxruntime", "optimum-onnx", "numpy", "tokenizers")


def require_export_extra() -> None:
    import importlib

    for module in _REQUIRED_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExportExtra(
                f"the export extra is missing ({module} cannot be imported: {exc}); "
                "install it with: pip install -e '.[export]'"
            ) from exc


def export_model(
    source: str,
    out: Path,
    *,
    dtypes: tuple[str, ...] = ("fp32",),
    validate: bool = True,
    force: bool = False,
    opset: int = 17,
    revision: str | None = None,
) -> dict[str, Any]:
    """Export ``source`` (folder or hub id, native or remote-code format) into the model folder ``out``.

    Returns what was written to ``out/export.json``. Raises ExportError subclasses with actionable messages.
    """
    started = time.perf_counter()
    dtypes = _normalise_dtypes(dtypes)
    require_export_extra()
    from export import folder

    out = Path(out)
    folder.check_output(out, force)  # before a download that may take minutes
    resolved = resolve(source, revision)
    fmt = detect_format(read_config(resolved.path), resolved.path)
    folder.prepare_output(out, force)
    with tempfile.TemporaryDirectory(prefix="florence-export-") as tmp:
        checkpoint = resolved.path
        if fmt is CheckpointFormat.REMOTE_CODE:
            from export.remote_format import convert_checkpoint

            log.info("converting remote-code checkpoint %s to the native layout", checkpoint)
            checkpoint = convert_checkpoint(resolved.path, Path(tmp) / "native")
        try:
            record = _export_native(checkpoint, out, dtypes=dtypes, validate=validate, opset=opset)
        except ExportError:
            raise
        except Exception as exc:  # a library failure deep in tracing or conversion: say which step, keep the cause
            raise GraphExportFailed(f"export of {source} failed: {type(exc).__name__}: {exc}") from exc
    record = {
        "source": source,
        "source_format": fmt.value,
        "origin": resolved.origin,
        "revision": resolved.revision,
        **record,
        "versions": _versions(),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "export_seconds": round(time.perf_counter() - started, 2),
    }
    write_transformers_js_keys(out)
    record["files"] = folder.file_sizes(out)
    folder.write_json(out / "export.json", record)
    return record


def _normalise_dtypes(dtypes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    unknown = [d for d in dtypes if d not in EXPORT_DTYPES]
    if unknown:
        raise ExportError(f"unknown dtype {unknown[0]!r}; choose from {', '.join(EXPORT_DTYPES)}")
    # fp32 graphs are the base of every variant and of validation, so they are always written; a variant that
    # reads another's files (q4 reads int8's) brings it along. EXPORT_DTYPES order writes those first.
    wanted = {"fp32", *dtypes, *(r for d in dtypes for r in requires(d))}
    return tuple(d for d in EXPORT_DTYPES if d in wanted)


def _export_native(checkpoint: Path, out: Path, *, dtypes: tuple[str, ...], validate: bool, opset: int) -> dict:
    import torch
    from transformers import Florence2ForConditionalGeneration, GenerationConfig

    from export import folder, graphs, trace, variants

    log.info("loading %s", checkpoint)
    model = Florence2ForConditionalGeneration.from_pretrained(
        checkpoint, attn_implementation="eager", dtype=torch.float32
    ).eval()
    n_params = sum(p.numel() for p in model.parameters())
    decoder_params = sum(p.numel() for p in model.get_decoder().parameters()) + model.lm_head.weight.numel()
    folder.check_free_space(out, folder.estimate_bytes(n_params, decoder_params, dtypes))
    folder.write_hf_files(checkpoint, out)
    # Validation generates with the folder's generation config, the one the runtime will read.
    model.generation_config = GenerationConfig.from_pretrained(out)

    onnx_dir = out / "onnx"
    work = out / ".unmerged"
    timings: dict[str, float] = {}
    try:
        for spec in graphs.graph_specs(model):
            log.info("tracing %s", spec.name)
            t0 = time.perf_counter()
            target = (work if spec.name in (DECODER_NO_PAST, DECODER_WITH_PAST) else onnx_dir) / spec.name
            trace.trace_graph(spec, target.with_suffix(".onnx"), opset)
            timings[spec.name] = round(time.perf_counter() - t0, 2)
        for dtype in dtypes:
            log.info("writing %s graphs", dtype)
            t0 = time.perf_counter()
            variants.write_variant(dtype, onnx_dir, work)
            timings[f"variant_{dtype}"] = round(time.perf_counter() - t0, 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    record: dict[str, Any] = {
        "dtypes": list(dtypes),
        "opset": opset,
        "parameters": n_params,
        "random_weights": bool(getattr(model.config, "random_weights", False)),
        "graphs": {d: {g: f"onnx/{file_name(g, d)}" for g in GRAPHS} for d in dtypes},
        "timings_seconds": timings,
        "validated": validate,
        "parity": None,
    }
    if validate:
        from export.validate import validate_export

        log.info("validating against PyTorch")
        t0 = time.perf_counter()
        try:
            record["parity"] = validate_export(model, checkpoint, out, dtypes)
        except ExportError:
            raise
        except Exception as exc:  # the checks themselves broke: still a folder nobody has shown to be right
            raise ValidationFailed(
                f"validation against PyTorch could not run ({type(exc).__name__}: {exc}); {out} has no export.json "
                "and must not be served. Report this with the source checkpoint; --no-validate skips the checks"
            ) from exc
        timings["validation"] = round(time.perf_counter() - t0, 2)
    return record


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found
