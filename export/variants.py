"""fp32, fp16, int8, q8 (int8 named `_quantized`) and q4 files of the graphs, with transformers.js suffixes.

Variants are made from the fp32 graphs before the decoder merge (the converters handle plain graphs better than
``If`` subgraphs); each variant's decoders are then merged like the fp32 ones. Each merged decoder is also written
as its two parts for OpenVINO (export/openvino_decoder.py), which read the merged file's weights.
``write_decoder_variant`` adds a decoder-only variant (q4) to an existing folder from its merged fp32 decoder
(MatMulNBits handles subgraphs).

Measured on the Florence-2-large architecture (2-core AVX-512 VNNI CPU, one process, alternating runs, ratio to
fp32): dynamic int8 (quantized after ONNX Runtime's basic optimizations) runs the vision encoder at 768x768 in about
0.44x, the encoder in 0.46x and a decoder step (20-token past) in 0.47x; 4-bit weight-only MatMulNBits (block 32,
int8 compute) gives the decoder step 0.42x but the vision encoder 0.90x and the encoder 0.96x (their large-M MatMuls
are compute-bound), hence q4 is decoder-only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import onnx

from export.errors import GraphExportFailed
from export.openvino_decoder import write_decoder_parts
from export.trace import merge_decoders, save_model, store_weights_apart
from runtime.model_folder import (
    DECODER,
    DECODER_NO_PAST,
    DECODER_WITH_PAST,
    EMBED_TOKENS,
    ENCODER,
    VISION_ENCODER,
    file_name,
    graph_dtype,
)

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
# q4: 4-bit symmetric blocks of 32 along K; accuracy level 4 quantises activations to int8 per block so the CPU
# runs int8 dot products (VNNI). Level 0 (fp32 compute) made the decoder step 2x slower; blocks of 128 were 11%
# faster but moved the logits further (cosine to fp32 0.945 against 0.961 on random weights).
Q4_BLOCK_SIZE = 32
Q4_ACCURACY_LEVEL = 4


def write_variant(dtype: str, onnx_dir: Path, work: Path) -> list[Path]:
    """Write the four graphs of ``dtype`` into ``onnx_dir`` from the fp32 graphs (decoders unmerged in ``work``)."""
    written = []
    if dtype != "fp32":
        written += _plain_graphs(dtype, onnx_dir)
        for graph in (DECODER_NO_PAST, DECODER_WITH_PAST):
            _convert(dtype, work / file_name(graph, "fp32"), work / file_name(graph, dtype))
    merged = merge_decoders(
        work / file_name(DECODER_NO_PAST, dtype),
        work / file_name(DECODER_WITH_PAST, dtype),
        onnx_dir / file_name(DECODER, dtype),
    )
    return [*written, merged, *write_decoder_parts(onnx_dir, dtype)]


def write_decoder_variant(dtype: str, onnx_dir: Path) -> Path:
    """Write the merged decoder of a decoder-only ``dtype`` (q4) from the merged fp32 decoder in ``onnx_dir``."""
    if any(graph_dtype(g, dtype) == dtype for g in _PLAIN_GRAPHS):
        raise ValueError(f"{dtype} converts more than the decoder; export the model again with --dtype {dtype}")
    _plain_graphs(dtype, onnx_dir)
    merged = _convert(dtype, onnx_dir / file_name(DECODER, "fp32"), onnx_dir / file_name(DECODER, dtype))
    write_decoder_parts(onnx_dir, dtype)
    return merged


def _plain_graphs(dtype: str, onnx_dir: Path) -> list[Path]:
    """``dtype``'s files of the graphs other than the decoder: converted from fp32, or copied from the variant
    whose conversion they hold (SHARED_GRAPHS), with their own side file."""
    written = []
    for graph in _PLAIN_GRAPHS:
        conversion = graph_dtype(graph, dtype)
        target = onnx_dir / file_name(graph, dtype)
        if conversion == dtype:
            written.append(_convert(dtype, onnx_dir / file_name(graph, "fp32"), target))
        else:
            written.append(save_model(onnx.load(str(onnx_dir / file_name(graph, conversion))), target))
    return written


@contextlib.contextmanager
def _quiet_converters() -> Iterator[None]:
    """The converters log per-tensor chatter (root logger, INFO/WARNING) that says nothing actionable here."""
    loggers = [
        logging.getLogger(),
        logging.getLogger("onnxruntime.transformers.float16"),
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer"),
    ]
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
    if dtype in ("int8", "q8"):
        return _to_int8(src, dst)
    if dtype == "q4":
        return _to_q4(src, dst)
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
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Quantizing the graph as ONNX Runtime's basic optimizations leave it (constants folded, redundant nodes gone)
    # lets the quantized MatMuls sit where the session's transpose optimizer can still work around them: on the
    # large vision encoder 0.86x the time of quantizing the traced graph directly, with identical outputs.
    # Weights travel in side files throughout: a graph's protobuf cannot hold more than 2 GiB.
    prepared = dst.with_name(dst.stem + ".prepared.onnx")
    try:
        quant_pre_process(
            str(src),
            str(prepared),
            skip_symbolic_shape=True,
            skip_optimization=False,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            external_data_location=prepared.name + "_data",  # removed below with the prepared graph
        )
        quantize_dynamic(
            prepared,
            dst,
            op_types_to_quantize=list(INT8_OPS),
            weight_type=QuantType.QInt8,
            per_channel=False,
            use_external_data_format=True,
        )
    finally:
        for leftover in dst.parent.glob(prepared.name + "*"):
            leftover.unlink()
    return store_weights_apart(dst)  # quantize_dynamic names its side file its own way


def _to_q4(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src)),
        bits=4,
        block_size=Q4_BLOCK_SIZE,
        is_symmetric=True,
        accuracy_level=Q4_ACCURACY_LEVEL,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    return save_model(quantizer.model.model, dst)
