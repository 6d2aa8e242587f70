"""Bytes of the decoder's KV cache, counted analytically from the model's ``config.json``.

Every decoder layer keeps a key and a value for each row (a hypothesis: requests x beams) and each position it
attends to; one position of one row is ``d_model`` numbers (``heads x head_dim``, which BART makes ``d_model``).
Self-attention attends to the tokens decoded so far: after ``n`` steps, ``n`` positions (the decoder start token
and every generated token but the last). Cross-attention attends to the encoder sequence: the image tokens
followed by the prompt ``<s> prompt </s>``. Its cache may be held once per request, shared by the request's beams,
or once per row; the decoder graph's metadata says which (runtime/engine/decoder.py reads the same).

The element size is that of the decoder graph's ``present.*`` outputs, which are what an engine holds between
steps (an fp16 graph exported with fp32 inputs and outputs holds an fp32 cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from bench.artefacts import graph_path, read_json
from bench.flops import ModelShape, TextShape
from runtime import model_folder as layout  # the model folder's file names
from runtime.model_folder import CROSS_CACHE_KEY, PER_REQUEST

CrossRows = Literal["request", "row"]
CROSS_ROWS: tuple[str, ...] = get_args(CrossRows)


@dataclass(frozen=True)
class KvCache:
    requests: int
    beams: int
    encoder_tokens: int  # cross-attention positions: image tokens + prompt tokens
    self_tokens: int  # self-attention positions: decoder steps taken (tokens generated)
    cross_rows: CrossRows
    itemsize: int
    cross_bytes: int
    self_bytes: int

    @property
    def rows(self) -> int:
        return self.requests * self.beams

    @property
    def total_bytes(self) -> int:
        return self.cross_bytes + self.self_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "beams": self.beams,
            "rows": self.rows,
            "encoder_tokens": self.encoder_tokens,
            "self_tokens": self.self_tokens,
            "cross_rows": self.cross_rows,
            "itemsize": self.itemsize,
            "cross_bytes": self.cross_bytes,
            "self_bytes": self.self_bytes,
            "bytes": self.total_bytes,
        }


def kv_cache(
    text: TextShape,
    requests: int,
    beams: int,
    encoder_tokens: int,
    self_tokens: int,
    itemsize: int,
    cross_rows: CrossRows = "request",
) -> KvCache:
    """The cache a decoder batch of ``requests`` x ``beams`` rows holds after ``self_tokens`` steps."""
    if cross_rows not in CROSS_ROWS:
        raise ValueError(f"cross_rows is {cross_rows!r}; use one of {', '.join(CROSS_ROWS)}")
    position_bytes = 2 * text.decoder_layers * text.d_model * itemsize  # a key and a value in every layer
    rows = requests * beams
    cross_count = requests if cross_rows == "request" else rows
    return KvCache(
        requests=requests,
        beams=beams,
        encoder_tokens=encoder_tokens,
        self_tokens=self_tokens,
        cross_rows=cross_rows,
        itemsize=itemsize,
        cross_bytes=cross_count * encoder_tokens * position_bytes,
        self_bytes=rows * self_tokens * position_bytes,
    )


@dataclass(frozen=True)
class DecoderCache:
    """The KV cache of one model folder's decoder, at any batch: its shape, the beams the model's generation
    config asks for (what a request that sets none gets), the element size of the variant's graph, and whether the
    cross-attention cache is taken to be held per request or per row."""

    text: TextShape
    beams: int
    itemsize: int
    cross_rows: CrossRows = "request"

    @classmethod
    def from_model_dir(cls, model_dir: Path, variant: str) -> DecoderCache:
        config = read_json(model_dir / "config.json")
        preprocessor = read_json(model_dir / "preprocessor_config.json")
        generation = model_dir / "generation_config.json"
        beams = int((read_json(generation) if generation.is_file() else {}).get("num_beams") or 1)
        itemsize, cross_rows = decoder_layout(graph_path(model_dir, layout.DECODER, variant))
        return cls(
            text=ModelShape.from_configs(config, preprocessor).text,
            beams=beams,
            itemsize=itemsize,
            cross_rows=cross_rows,
        )

    def at(self, requests: int, encoder_tokens: int, self_tokens: int) -> KvCache:
        return kv_cache(self.text, requests, self.beams, encoder_tokens, self_tokens, self.itemsize, self.cross_rows)


def decoder_layout(decoder_graph: Path) -> tuple[int, CrossRows]:
    """Bytes per element of the cache the decoder graph returns (its first ``present.*`` output), and whether it
    keeps the cross-attention cache once per request (its metadata says so, as the runtime reads it) or per row."""
    import onnx
    from onnx import helper

    model = onnx.load(str(decoder_graph), load_external_data=False)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    cross_rows: CrossRows = "request" if metadata.get(CROSS_CACHE_KEY) == PER_REQUEST else "row"
    for output in model.graph.output:
        if output.name.startswith("present."):
            return int(helper.tensor_dtype_to_np_dtype(output.type.tensor_type.elem_type).itemsize), cross_rows
    raise ValueError(f"{decoder_graph} has no present.* output: it is not a decoder with a KV cache")
