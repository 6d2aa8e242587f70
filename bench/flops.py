"""Floating-point work of each Florence-2 stage, counted analytically from the model's ``config.json``.

Only the matrix-class operations are counted (linear layers, convolutions, attention products), two FLOPs per
multiply-add, with the conventions of ``torch.utils.flop_counter.FlopCounterMode``; a test holds these counts
equal to that counter on a random model. Norms, softmax, GELU and additions are left out: they are a few percent
of the work and bound by memory, not arithmetic, so leaving them out keeps a floor a floor.

Stages: the vision encoder (DaViT backbone and projector), the text encoder (BART encoder over the image
features followed by the prompt), the first decoder step (which also projects the encoder output to the
cross-attention keys and values, once per image) and each later decoder step (self-attention over the cache).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VisionShape:
    embed_dim: tuple[int, ...]
    num_heads: tuple[int, ...]
    num_groups: tuple[int, ...]
    depths: tuple[int, ...]
    patch_size: tuple[int, ...]
    patch_stride: tuple[int, ...]
    patch_padding: tuple[int, ...]
    window_size: int
    mlp_ratio: float
    in_channels: int
    projection_dim: int


@dataclass(frozen=True)
class TextShape:
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_ffn: int
    decoder_ffn: int
    vocab_size: int


@dataclass(frozen=True)
class ModelShape:
    vision: VisionShape
    text: TextShape
    image_size: tuple[int, int]  # (height, width) the preprocessor resizes to

    @classmethod
    def from_configs(cls, config: dict[str, Any], preprocessor: dict[str, Any]) -> ModelShape:
        """Read the shapes from ``config.json`` and ``preprocessor_config.json`` (native transformers layout)."""
        v = config["vision_config"]
        t = config["text_config"]
        size = preprocessor.get("size") or {"height": 768, "width": 768}
        vision = VisionShape(
            embed_dim=tuple(v["embed_dim"]),
            num_heads=tuple(v["num_heads"]),
            num_groups=tuple(v["num_groups"]),
            depths=tuple(v["depths"]),
            patch_size=tuple(v["patch_size"]),
            patch_stride=tuple(v["patch_stride"]),
            patch_padding=tuple(v["patch_padding"]),
            window_size=int(v["window_size"]),
            mlp_ratio=float(v.get("mlp_ratio", 4.0)),
            in_channels=int(v.get("in_channels", 3)),
            projection_dim=int(v["projection_dim"]),
        )
        text = TextShape(
            d_model=int(t["d_model"]),
            encoder_layers=int(t["encoder_layers"]),
            decoder_layers=int(t["decoder_layers"]),
            encoder_ffn=int(t["encoder_ffn_dim"]),
            decoder_ffn=int(t["decoder_ffn_dim"]),
            vocab_size=int(t["vocab_size"]),
        )
        return cls(vision=vision, text=text, image_size=(int(size["height"]), int(size["width"])))

    def image_tokens(self) -> int:
        """Tokens the vision encoder emits: one per cell of the last stage plus one pooled token."""
        height, width = self.image_size
        for size, stride, pad in zip(
            self.vision.patch_size, self.vision.patch_stride, self.vision.patch_padding, strict=True
        ):
            height, width = _conv_out(height, size, stride, pad), _conv_out(width, size, stride, pad)
        return height * width + 1


def _conv_out(length: int, kernel: int, stride: int, pad: int) -> int:
    return (length + 2 * pad - kernel) // stride + 1


def _linear(tokens: int, fan_in: int, fan_out: int) -> float:
    return 2.0 * tokens * fan_in * fan_out


def vision_flops(shape: ModelShape, batch: int = 1) -> float:
    """The DaViT backbone (four stages of spatial-window and channel-group blocks) and the projector."""
    v = shape.vision
    height, width = shape.image_size
    channels = v.in_channels
    total = 0.0
    for stage, dim in enumerate(v.embed_dim):
        kernel, stride, pad = v.patch_size[stage], v.patch_stride[stage], v.patch_padding[stage]
        height, width = _conv_out(height, kernel, stride, pad), _conv_out(width, kernel, stride, pad)
        tokens = height * width
        total += 2.0 * tokens * dim * channels * kernel * kernel  # patch-embedding convolution
        channels = dim
        hidden = int(dim * v.mlp_ratio)
        window = v.window_size
        padded = math.ceil(height / window) * window * math.ceil(width / window) * window
        group_dim = dim // v.num_groups[stage]
        depthwise = 2.0 * tokens * dim * 9  # one 3x3 depthwise convolution
        mlp = _linear(tokens, dim, hidden) + _linear(tokens, hidden, dim)
        spatial = (
            2 * depthwise
            + _linear(padded, dim, 3 * dim)  # qkv over the padded windows
            + 4.0 * padded * window * window * dim  # QK^T and AV inside each window, all heads
            + _linear(padded, dim, dim)
            + mlp
        )
        channel = (
            2 * depthwise
            + _linear(tokens, dim, 3 * dim)
            + 4.0 * tokens * dim * group_dim  # channel-to-channel attention within each group
            + _linear(tokens, dim, dim)
            + mlp
        )
        total += v.depths[stage] * (spatial + channel)
    total += _linear(height * width + 1, v.embed_dim[-1], v.projection_dim)
    return batch * total


def text_encoder_flops(shape: ModelShape, seq_len: int, batch: int = 1) -> float:
    """The BART encoder over ``seq_len`` tokens (image features followed by the prompt)."""
    t = shape.text
    d = t.d_model
    per_layer = 4 * _linear(seq_len, d, d) + 4.0 * seq_len * seq_len * d + 2 * _linear(seq_len, d, t.encoder_ffn)
    return batch * t.encoder_layers * per_layer


def cross_kv_flops(shape: ModelShape, encoder_len: int) -> float:
    """Projecting the encoder output to every decoder layer's cross-attention keys and values (once per image)."""
    t = shape.text
    return t.decoder_layers * 2 * _linear(encoder_len, t.d_model, t.d_model)


def decoder_step_flops(shape: ModelShape, position: int, encoder_len: int, batch: int = 1) -> float:
    """One decoder step for ``batch`` sequences whose self-attention cache holds ``position`` tokens (this one
    included), cross-attention over ``encoder_len`` states, and the LM head. Cross keys/values excluded."""
    t = shape.text
    d = t.d_model
    per_layer = (
        4 * _linear(1, d, d)  # self-attention q, k, v, o
        + 4.0 * position * d  # self-attention QK^T and AV
        + 2 * _linear(1, d, d)  # cross-attention q, o
        + 4.0 * encoder_len * d  # cross-attention QK^T and AV
        + 2 * _linear(1, d, t.decoder_ffn)
    )
    return batch * (t.decoder_layers * per_layer + _linear(1, d, t.vocab_size))


def first_decode_flops(shape: ModelShape, encoder_len: int, batch: int = 1) -> float:
    """The first decoder step: the cross-attention keys/values of the image (once) and one token per sequence."""
    return cross_kv_flops(shape, encoder_len) + decoder_step_flops(shape, 1, encoder_len, batch)


def per_token_decode_flops(shape: ModelShape, new_tokens: int, encoder_len: int, batch: int = 1) -> float:
    """Mean work of the decoder steps after the first, when ``new_tokens`` are generated."""
    steps = range(2, new_tokens + 1)
    if not steps:
        return decoder_step_flops(shape, 1, encoder_len, batch)
    return sum(decoder_step_flops(shape, p, encoder_len, batch) for p in steps) / len(steps)


def stage_flops(shape: ModelShape, prompt_tokens: int, new_tokens: int, batch: int = 1) -> dict[str, float]:
    """FLOPs of every stage for one request; ``prompt_tokens`` counts ``<s> prompt </s>``."""
    encoder_len = shape.image_tokens() + prompt_tokens
    return {
        "vision_encoder": vision_flops(shape),
        "text_encoder": text_encoder_flops(shape, encoder_len),
        "first_decode": first_decode_flops(shape, encoder_len, batch),
        "per_token_decode": per_token_decode_flops(shape, new_tokens, encoder_len, batch),
    }
