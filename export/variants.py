"""fp32, fp16 and int8 files of the four graphs, named with the transformers.js suffixes.

Variants are made from the fp32 graphs before the decoder merge (the converters handle plain graphs better than
``If`` subgraphs); each variant's decoders are then merged like the fp32 ones.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import onnx

from export.errors import GraphExportFailed
from export.layout import (
    DECODER,
    DECODER_MERGED,
    DECODER_WITH_PAST,
    EMBED_TOKENS,
    ENCODER,
    VISION_ENCODER,
    file_name,
)
from export.trace import merge_decoders, save_model

_PLAIN_GRAPHS = (VISION_ENCODER, EMBED_TOKENS, ENCODER)

# Ops kept in fp32 in the fp16 variant: reductions and normalisations overflow or lose too much in half precision,
# and the CPU execution provider lacks fp16 kernels for several of them (it would insert casts anyway).
FP16_KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "Pow",
    "ReduceMean",
    "Sqrt",
    "Erf",
    "Range",
    "CumSum",
)
# Dynamic quantization targets the weight-heavy ops. Conv stays fp32: the CPU provider's ConvInteger is
# uint8-only and slow, and DaViT's convolutions hold few of the weights.
INT8_OPS: tuple[str, ...] = ("MatMul", "Gemm", "Gather")


def write_variant(dtype: str, onnx_dir: Path, work: Path) -> list[Path]:
    """Write the four graphs of ``dtype`` into ``onnx_dir`` from the fp32 graphs (decoders unmerged in ``work``)."""
    written = []
    if dtype != "fp32":
        for graph in _PLAIN_GRAPHS:
            written.append(_convert(dtype, onnx_dir / file_name(graph, "fp32"), onnx_dir / file_name(graph, dtype)))
        for graph in (DECODER, DECODER_WITH_PAST):
            _convert(dtype, work / file_name(graph, "fp32"), work / file_name(graph, dtype))
    merged = merge_decoders(
        work / file_name(DECODER, dtype),
        work / file_name(DECODER_WITH_PAST, dtype),
        onnx_dir / file_name(DECODER_MERGED, dtype),
    )
    return [*written, merged]


@contextlib.contextmanager
def _quiet_converters() -> Iterator[None]:
    """The converters log per-tensor chatter (root logger, INFO/WARNING) that says nothing actionable here."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.transformers.float16")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _convert(dtype: str, src: Path, dst: Path) -> Path:
    try:
        with _quiet_converters():
            return _convert_quietly(dtype, src, dst)
    except Exception as exc:
        raise GraphExportFailed(f"could not convert {src.name} to {dtype}: {type(exc).__name__}: {exc}") from exc


def _convert_quietly(dtype: str, src: Path, dst: Path) -> Path:
    if dtype == "fp16":
        return _to_fp16(src, dst)
    if dtype == "int8":
        return _to_int8(src, dst)
    raise ValueError(f"unknown dtype {dtype}")


def _to_fp16(src: Path, dst: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(
        onnx.load(str(src)), keep_io_types=True, op_block_list=list(FP16_KEEP_FP32_OPS), disable_shape_infer=False
    )
    # The converter appends the input casts after their consumers; an If subgraph (the merge) must be sorted.
    sortable = OnnxModel(model)
    sortable.topological_sort()
    return save_model(sortable.model, dst)


def _to_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    size = src.stat().st_size
    quantize_dynamic(
        src,
        dst,
        op_types_to_quantize=list(INT8_OPS),
        weight_type=QuantType.QInt8,
        per_channel=False,
        use_external_data_format=size > 2**31 - 2**26,
    )
    return dst
