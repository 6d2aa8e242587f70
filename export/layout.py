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
DTYPES: tuple[str, ...] = ("fp32", "fp16", "int8")
_SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_int8"}


def file_name(graph: str, dtype: str) -> str:
    """``decoder_model_merged`` + ``int8`` -> ``decoder_model_merged_int8.onnx``."""
    return f"{graph}{_SUFFIX[dtype]}.onnx"


def past_names(layers: int, prefix: str = "past_key_values") -> list[str]:
    """KV tensor names per layer in the order decoder key, decoder value, encoder key, encoder value."""
    return [
        f"{prefix}.{i}.{kind}.{kv}" for i in range(layers) for kind in ("decoder", "encoder") for kv in ("key", "value")
    ]
