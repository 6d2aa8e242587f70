"""An onnx-community-style model folder of the tiny model: every transformers.js dtype suffix, made by the
converters those folders are made with, some graphs with inline weights, some decoders unmerged.

| suffix       | how                                               | weights  | decoder  |
| ------------ | ------------------------------------------------- | -------- | -------- |
| ``""``       | our fp32 graphs                                   | inline   | unmerged |
| ``_fp16``    | our fp16 graphs                                   | side     | merged   |
| ``_int8``    | our int8 graphs (QInt8 dynamic)                   | side     | merged   |
| ``_quantized`` | QInt8 dynamic quantization, copied side file    | side     | merged   |
| ``_uint8``   | QUInt8 dynamic quantization                       | inline   | unmerged |
| ``_q4``      | 4-bit MatMulNBits over fp32, all four graphs      | side     | merged   |
| ``_q4f16``   | 4-bit MatMulNBits over fp16                       | side     | merged   |
| ``_bnb4``    | 4-bit MatMulBnb4 (NF4) over fp32                  | side     | merged   |

The unmerged decoders are traced from the checkpoint like the exporter traces them, with the metadata of our
per-request cross-attention layout that the exporter puts on the merged file.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx

SUFFIXES = {
    "fp32": "",
    "fp16": "_fp16",
    "int8": "_int8",
    "q8": "_quantized",
    "uint8": "_uint8",
    "q4": "_q4",
    "q4f16": "_q4f16",
    "bnb4": "_bnb4",
}
PLAIN_GRAPHS = ("vision_encoder", "embed_tokens", "encoder_model")
MERGED = "decoder_model_merged"
PARTS = ("decoder_model", "decoder_with_past_model")
UNMERGED_VARIANTS = ("fp32", "uint8")
INLINE_VARIANTS = ("fp32", "uint8")


def build_community_folder(model_dir: Path, checkpoint: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.name != "export.json":  # not our export: no record of how it was made
            shutil.copy(item, out / item.name)
    onnx_dir = out / "onnx"
    onnx_dir.mkdir()
    ours = model_dir / "onnx"
    with tempfile.TemporaryDirectory(prefix="community-") as tmp:
        parts = _trace_decoder_parts(checkpoint, Path(tmp))
        sources = {g: ours / f"{g}.onnx" for g in (*PLAIN_GRAPHS, MERGED)} | parts
        for graph, source in sources.items():
            if graph != MERGED:
                _save(onnx.load(str(source)), onnx_dir / f"{graph}.onnx", inline=True)
        for variant in ("fp16", "int8"):
            for graph in (*PLAIN_GRAPHS, MERGED):
                _save(onnx.load(str(ours / f"{graph}{SUFFIXES[variant]}.onnx")), onnx_dir / _name(graph, variant))
        for graph in (*PLAIN_GRAPHS, MERGED):
            _save(onnx.load(str(ours / f"{graph}_int8.onnx")), onnx_dir / _name(graph, "q8"))
            _save(_q4(onnx.load(str(sources[graph]))), onnx_dir / _name(graph, "q4"))
            _save(_q4(onnx.load(str(ours / f"{graph}_fp16.onnx"))), onnx_dir / _name(graph, "q4f16"))
            _save(_bnb4(onnx.load(str(sources[graph]))), onnx_dir / _name(graph, "bnb4"))
        for graph in (*PLAIN_GRAPHS, *PARTS):
            _uint8(sources[graph], onnx_dir / _name(graph, "uint8"), Path(tmp))
    return out


def _name(graph: str, variant: str) -> str:
    return f"{graph}{SUFFIXES[variant]}.onnx"


def _trace_decoder_parts(checkpoint: Path, work: Path) -> dict[str, Path]:
    import torch
    from transformers import Florence2ForConditionalGeneration

    from export import graphs, trace
    from runtime.model_folder import CROSS_CACHE_KEY, PER_REQUEST

    model = Florence2ForConditionalGeneration.from_pretrained(
        checkpoint, attn_implementation="eager", dtype=torch.float32
    ).eval()
    paths = {}
    for spec in graphs.graph_specs(model):
        if spec.name in PARTS:
            path = trace.trace_graph(spec, work / f"{spec.name}.onnx", 17)
            traced = onnx.load(str(path))
            onnx.helper.set_model_props(traced, {CROSS_CACHE_KEY: PER_REQUEST})
            paths[spec.name] = trace.save_model(traced, path)
    return paths


def _save(model: onnx.ModelProto, path: Path, *, inline: bool = False) -> Path:
    from export.trace import save_model

    if inline:
        onnx.save(model, str(path))
        return path
    return save_model(model, path)


def _q4(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True, op_types_to_quantize=("MatMul",))
    quantizer.process()
    return quantizer.model.model


def _bnb4(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer

    quantizer = MatMulBnb4Quantizer(model, quant_type=MatMulBnb4Quantizer.NF4, block_size=32)
    quantizer.process()
    return quantizer.model.model


def _uint8(source: Path, out: Path, work: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staged = work / f"uint8-{out.name}"
    quantize_dynamic(source, staged, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QUInt8)
    onnx.save(onnx.load(str(staged)), str(out))  # inline weights
    return out
