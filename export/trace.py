"""Trace graphs to ONNX (TorchScript exporter) and merge the two decoders into one."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from export.cross_attention import METADATA_KEY, PER_REQUEST
from export.errors import GraphExportFailed
from export.graphs import GraphSpec
from export.simplify import drop_single_input_concats

# Protobuf cannot hold a model above 2 GiB; larger graphs keep their weights in a side file.
_PROTOBUF_LIMIT = 2**31 - 2**26


def trace_graph(spec: GraphSpec, path: Path, opset: int) -> Path:
    """Export one graph to ``path``; raises GraphExportFailed naming the graph."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches are expected
            torch.onnx.export(
                spec.module.eval(),
                spec.args,
                str(path),
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise GraphExportFailed(f"could not trace {spec.name} to ONNX: {type(exc).__name__}: {exc}") from exc
    model = onnx.load(str(path))
    if drop_single_input_concats(model):
        save_model(model, path)
    return path


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Save ``model``, moving weights to ``<name>.onnx_data`` only when protobuf cannot hold them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{path.name}_data"
        )
    else:
        onnx.save_model(model, str(path))
    return path


def merge_decoders(decoder: Path, decoder_with_past: Path, out: Path) -> Path:
    """Fuse the decoders behind ``use_cache_branch``; the with-past branch returns empty cross-attention KV.

    The merged graph's metadata says that it keeps the cross-attention cache once per request (see
    export/cross_attention.py), which is how the runtime tells it from a per-row graph exported elsewhere.
    """
    from optimum.onnx import merge_decoders as optimum_merge

    try:
        optimum_merge(str(decoder), str(decoder_with_past), save_path=str(out), strict=False)
    except Exception as exc:
        raise GraphExportFailed(f"could not merge {decoder.name} and {decoder_with_past.name}: {exc}") from exc
    merged = onnx.load(str(out))
    onnx.helper.set_model_props(merged, {METADATA_KEY: PER_REQUEST})
    return save_model(merged, out)
