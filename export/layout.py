"""Names of the graph files in a model folder (the transformers.js layout); torch-free, shared by all steps."""

from __future__ import annotations

VISION_ENCODER = "vision_encoder"
EMBED_TOKENS = "embed_tokens"
ENCODER = "encoder_model"
DECODER_MERGED = "decoder_model_merged"
# traced separately, merged into DECODER_MERGED, never left in the folder
DECODER = "decoder_model"
DECODER_WITH_PAST = "decoder_with_past_model"

FINAL_GRAPHS: tuple[str, ...] = (VISION_ENCODER, EMBED_TOKENS, ENCODER, DECODER_MERGED)
# q8 is transformers.js's name for 8-bit files (``_quantized``, its WebAssembly default): the int8 conversion under
# that name, for folders served to transformers.js.
DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8", "q8", "q4")
_SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_int8", "q8": "_quantized", "q4": "_q4"}
# A variant's file of a graph may hold another variant's conversion. q4 (4-bit weight-only MatMulNBits) pays only on
# the memory-bound decoder step; the compute-bound graphs (vision encoder, encoder) run faster in dynamic int8, so
# q4's files of those graphs are copies of their int8 files. Every graph still has its ``_q4`` file, because
# transformers.js's q4 dtype asks for all four (folders exported before kept only the decoder's; the runtime reads
# their ``_int8`` files then).
SHARED_GRAPHS: dict[str, tuple[str, tuple[str, ...]]] = {"q4": ("int8", (VISION_ENCODER, EMBED_TOKENS, ENCODER))}


def graph_dtype(graph: str, dtype: str) -> str:
    """The conversion ``graph``'s file of ``dtype`` holds: ``vision_encoder`` of ``q4`` holds int8's."""
    base, graphs = SHARED_GRAPHS.get(dtype, (dtype, ()))
    return base if graph in graphs else dtype


def requires(dtype: str) -> tuple[str, ...]:
    """Variants whose files ``dtype`` copies (they are written first)."""
    return (SHARED_GRAPHS[dtype][0],) if dtype in SHARED_GRAPHS else ()


def file_name(graph: str, dtype: str) -> str:
    """``decoder_model_merged`` + ``int8`` -> ``decoder_model_merged_int8.onnx`` (transformers.js's suffixes)."""
    return f"{graph}{_SUFFIX[dtype]}.onnx"


def past_names(layers: int, prefix: str = "past_key_values") -> list[str]:
    """KV tensor names per layer in the order decoder key, decoder value, encoder key, encoder value."""
    return [
        f"{prefix}.{i}.{kind}.{kv}" for i in range(layers) for kind in ("decoder", "encoder") for kv in ("key", "value")
    ]
