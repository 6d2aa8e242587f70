"""The model folder's graph files: names, variant suffixes, which variant's file each graph reads, the decoder's
file forms and the metadata the decoder carries. The one owner of this contract: the exporter writes folders by
it, the engine and the benchmark read them by it. Torch-free and onnx-free (the runtime imports it).

A folder holds ``onnx/<graph><suffix>.onnx`` (the transformers.js / onnx-community layout), weights in
``<file>_data`` side files. The decoder is one merged graph (``decoder_model_merged``, a ``use_cache_branch`` input
picks the first step or a cached step), and may also be there as its two parts (``decoder_model``: the first step,
``decoder_with_past_model``: the cached steps). OpenVINO compiles only the parts (it refuses the merged graph's
``If``); ``python -m export.openvino_decoder MODEL_DIR`` writes them from the merged file, and their weights stay in
the merged file's side file, which they name.
"""

from __future__ import annotations

from collections.abc import Mapping

ONNX_DIR = "onnx"

VISION_ENCODER = "vision_encoder"
EMBED_TOKENS = "embed_tokens"
ENCODER = "encoder_model"
# The decoder graph, named by its merged file. The engine drives this one graph whichever files it comes from.
DECODER = "decoder_model_merged"
# The decoder's two parts: the first step (no past) and the cached steps (with past).
DECODER_NO_PAST = "decoder_model"
DECODER_WITH_PAST = "decoder_with_past_model"
GRAPHS: tuple[str, ...] = (VISION_ENCODER, EMBED_TOKENS, ENCODER, DECODER)

# transformers.js's DEFAULT_DTYPE_SUFFIX_MAPPING: variant (dtype) -> file suffix. Folders exported elsewhere may
# hold any of them; the runtime loads them all.
SUFFIXES: Mapping[str, str] = {
    "fp32": "",
    "fp16": "_fp16",
    "int8": "_int8",
    "uint8": "_uint8",
    "q8": "_quantized",
    "q4": "_q4",
    "q4f16": "_q4f16",
    "bnb4": "_bnb4",
}
VARIANTS: tuple[str, ...] = tuple(SUFFIXES)
# The variants our exporter writes, in the order it writes them (a variant's files come after those it copies).
# q8 is transformers.js's name for 8-bit files (``_quantized``, its WebAssembly default): the int8 conversion
# under that name, for folders served to transformers.js.
EXPORT_DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8", "q8", "q4")
# Variants whose files hold dynamic int8 quantization (DynamicQuantizeLinear + MatMulInteger).
INT8_VARIANTS: tuple[str, ...] = ("int8", "q8")

# A variant's file of a graph may hold another variant's conversion. q4 (4-bit weight-only MatMulNBits) pays only on
# the memory-bound decoder step; the compute-bound graphs (vision encoder, encoder) run faster in dynamic int8, so
# q4's files of those graphs are copies of their int8 files. Every graph still has its ``_q4`` file, because
# transformers.js's q4 dtype asks for all four (folders exported before kept only the decoder's; the runtime reads
# their ``_int8`` files then).
SHARED_GRAPHS: Mapping[str, tuple[str, tuple[str, ...]]] = {"q4": ("int8", (VISION_ENCODER, EMBED_TOKENS, ENCODER))}

# The ONNX metadata key (and its value) by which a decoder says that it keeps the cross-attention KV once per
# request, shared by the request's rows (export/cross_attention.py); without it, one per row.
CROSS_CACHE_KEY = "florence2.cross_attention_cache"
PER_REQUEST = "per_request"


def graph_dtype(graph: str, dtype: str) -> str:
    """The conversion ``graph``'s file of ``dtype`` holds: ``vision_encoder`` of ``q4`` holds int8's."""
    base, graphs = SHARED_GRAPHS.get(dtype, (dtype, ()))
    return base if graph in graphs else dtype


def requires(dtype: str) -> tuple[str, ...]:
    """Variants whose files ``dtype`` copies (they are written first)."""
    return (SHARED_GRAPHS[dtype][0],) if dtype in SHARED_GRAPHS else ()


def file_name(graph: str, dtype: str) -> str:
    """``decoder_model_merged`` + ``int8`` -> ``decoder_model_merged_int8.onnx`` (transformers.js's suffixes)."""
    return f"{graph}{SUFFIXES[dtype]}.onnx"


def decoder_part_files(dtype: str) -> tuple[str, str]:
    """The decoder's two part files of ``dtype``: (no past, with past)."""
    return file_name(DECODER_NO_PAST, dtype), file_name(DECODER_WITH_PAST, dtype)


def past_names(layers: int, prefix: str = "past_key_values") -> list[str]:
    """KV tensor names per layer in the order decoder key, decoder value, encoder key, encoder value."""
    return [
        f"{prefix}.{i}.{kind}.{kv}" for i in range(layers) for kind in ("decoder", "encoder") for kv in ("key", "value")
    ]
