"""The four Florence-2 graphs as traceable torch modules, with their tensor names and dynamic axes.

The names follow the transformers.js / onnx-community layout so that a model folder exported elsewhere in that
layout loads too. The decoder is traced twice (without and with past key values) and merged afterwards into
``decoder_model_merged.onnx`` behind a ``use_cache_branch`` input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

if TYPE_CHECKING:
    from transformers import Florence2ForConditionalGeneration

from export.cross_attention import shared_cross_attention
from runtime.model_folder import (
    DECODER_NO_PAST,
    DECODER_WITH_PAST,
    EMBED_TOKENS,
    ENCODER,
    VISION_ENCODER,
    past_names,
)


@dataclass(frozen=True)
class TextDims:
    """Sizes of the language model that the graphs' shapes depend on."""

    layers: int
    heads: int
    d_model: int
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @classmethod
    def of(cls, model: Florence2ForConditionalGeneration) -> TextDims:
        text = model.config.text_config
        return cls(text.decoder_layers, text.decoder_attention_heads, text.d_model, text.vocab_size)


class VisionEncoder(nn.Module):
    """pixel_values -> image_features: the DaViT backbone followed by the multi-modal projector."""

    def __init__(self, model: Florence2ForConditionalGeneration) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values)


class EmbedTokens(nn.Module):
    def __init__(self, model: Florence2ForConditionalGeneration) -> None:
        super().__init__()
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class Encoder(nn.Module):
    def __init__(self, model: Florence2ForConditionalGeneration) -> None:
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask, return_dict=True)[0]


class Decoder(nn.Module):
    """One decoder step over embedded tokens; returns logits and the KV cache.

    Without past it returns self- and cross-attention KV; with past only the self-attention KV (the
    cross-attention KV never changes after the first step, so the merged graph returns empty tensors there).
    The cross-attention KV is kept once per request and shared by its rows (export/cross_attention.py).
    """

    def __init__(self, model: Florence2ForConditionalGeneration, with_past: bool) -> None:
        super().__init__()
        self.decoder = model.get_decoder()
        self.lm_head = model.get_output_embeddings()
        self.with_past = with_past

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        if self.with_past:
            cache = EncoderDecoderCache.from_legacy_cache(tuple(tuple(past[i : i + 4]) for i in range(0, len(past), 4)))
        else:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        with shared_cross_attention(self.decoder):
            out = self.decoder(
                inputs_embeds=inputs_embeds,
                encoder_hidden_states=encoder_hidden_states,
                encoder_attention_mask=encoder_attention_mask,
                past_key_values=cache,
                use_cache=True,
                return_dict=True,
            )
        logits = self.lm_head(out.last_hidden_state)
        presents: list[torch.Tensor] = []
        for layer in out.past_key_values.to_legacy_cache():
            presents.extend(layer[:2] if self.with_past else layer[:4])
        return (logits, *presents)


@dataclass(frozen=True)
class GraphSpec:
    """What ``torch.onnx.export`` needs to trace one graph."""

    name: str
    module: nn.Module
    args: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def graph_specs(model: Florence2ForConditionalGeneration, image_size: int = 768) -> list[GraphSpec]:
    """The five graphs to trace, with example inputs shaped like real traffic (batch 2, padded prompt; the
    decoder with past at 2 rows per request, so that the rows sharing a cross-attention cache are traced)."""
    dims = TextDims.of(model)
    batch, prompt_len, dec_len, past_len, beams = 2, 9, 3, 4, 2
    n_image = (image_size // 32) ** 2 + 1
    enc_len = n_image + prompt_len
    gen = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch, 3, image_size, image_size, generator=gen)
    input_ids = torch.randint(4, dims.vocab_size, (batch, prompt_len), generator=gen)
    embeds = torch.randn(batch, enc_len, dims.d_model, generator=gen)
    mask = torch.ones(batch, enc_len, dtype=torch.int64)
    mask[1, -3:] = 0
    enc_states = torch.randn(batch, enc_len, dims.d_model, generator=gen)
    dec_embeds = torch.randn(batch, dec_len, dims.d_model, generator=gen)
    rows = batch * beams
    step_embeds = torch.randn(rows, 1, dims.d_model, generator=gen)
    kv = []
    for _ in range(dims.layers):
        kv += [torch.randn(rows, dims.heads, past_len, dims.head_dim, generator=gen) for _ in range(2)]
        kv += [torch.randn(batch, dims.heads, enc_len, dims.head_dim, generator=gen) for _ in range(2)]

    b, requests = "batch_size", "encoder_batch_size"
    dec_in = ["inputs_embeds", "encoder_attention_mask", "encoder_hidden_states"]
    dec_axes: dict[str, dict[int, str]] = {
        "inputs_embeds": {0: b, 1: "decoder_sequence_length"},
        "encoder_attention_mask": {0: requests, 1: "encoder_sequence_length"},
        "encoder_hidden_states": {0: requests, 1: "encoder_sequence_length"},
        "logits": {0: b, 1: "decoder_sequence_length"},
    }
    presents = past_names(dims.layers, "present")
    pasts = past_names(dims.layers)
    no_past_axes = dict(dec_axes)
    for name in presents:
        self_kv = ".decoder." in name
        no_past_axes[name] = {
            0: b if self_kv else requests,
            2: "decoder_sequence_length" if self_kv else "encoder_sequence_length",
        }
    with_past_axes = dict(dec_axes)
    for name in pasts:
        self_kv = ".decoder." in name
        with_past_axes[name] = {
            0: b if self_kv else requests,
            2: "past_decoder_sequence_length" if self_kv else "encoder_sequence_length_out",
        }
    self_presents = [n for n in presents if ".decoder." in n]
    for name in self_presents:
        with_past_axes[name] = {0: b, 2: "past_decoder_sequence_length + 1"}

    return [
        GraphSpec(
            VISION_ENCODER,
            VisionEncoder(model),
            (pixel_values,),
            ["pixel_values"],
            ["image_features"],
            {"pixel_values": {0: b, 2: "height", 3: "width"}, "image_features": {0: b, 1: "num_image_tokens"}},
        ),
        GraphSpec(
            EMBED_TOKENS,
            EmbedTokens(model),
            (input_ids,),
            ["input_ids"],
            ["inputs_embeds"],
            {"input_ids": {0: b, 1: "sequence_length"}, "inputs_embeds": {0: b, 1: "sequence_length"}},
        ),
        GraphSpec(
            ENCODER,
            Encoder(model),
            (embeds, mask),
            ["inputs_embeds", "attention_mask"],
            ["last_hidden_state"],
            {
                "inputs_embeds": {0: b, 1: "encoder_sequence_length"},
                "attention_mask": {0: b, 1: "encoder_sequence_length"},
                "last_hidden_state": {0: b, 1: "encoder_sequence_length"},
            },
        ),
        GraphSpec(
            DECODER_NO_PAST,
            Decoder(model, with_past=False),
            (dec_embeds, mask, enc_states),
            dec_in,
            ["logits", *presents],
            no_past_axes,
        ),
        GraphSpec(
            DECODER_WITH_PAST,
            Decoder(model, with_past=True),
            (step_embeds, mask, enc_states, *kv),
            [*dec_in, *pasts],
            ["logits", *self_presents],
            with_past_axes,
        ),
    ]
