"""Decoder cross-attention over one cache per request, which the request's beams share.

transformers keeps the cross-attention keys and values once per decoder row, so a request decoded with 3 beams
holds (and reads at every step) 3 identical copies of them. The graphs traced here keep them once per request:
the rows of a request are consecutive, and their queries attend to the request's keys as extra query positions
of one attention, which is the same arithmetic. On the large model at 8 requests x 3 beams that is 0.46 GiB of
cache instead of 1.39 GiB, read once per step instead of three times.

``shared_cross_attention(decoder)`` switches the decoder to it while the graphs are traced. Self-attention is left
to transformers' eager attention. The first decoder step (no cache) projects the encoder states, so it must run
with one row per request; later steps may carry any number of rows per request, the same for every request.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.models.bart.modeling_bart import eager_attention_forward

_IMPLEMENTATION = "florence2_shared_cross_attention"
_CROSS_MODULES: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    head_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if module not in _CROSS_MODULES:
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, head_mask, **kwargs)
    if head_mask is not None:
        raise ValueError("head masks are not supported by the shared cross-attention export")
    rows, heads, targets, head_dim = query.shape
    requests = key.shape[0]
    scale = head_dim**-0.5 if scaling is None else scaling
    # [rows, heads, targets, dim] -> [requests, heads, beams * targets, dim]: a request's rows are consecutive.
    shared_query = query.transpose(1, 2).reshape(requests, -1, heads, head_dim).transpose(1, 2)
    weights = torch.matmul(shared_query, key.transpose(2, 3)) * scale
    if attention_mask is not None:
        # The padding mask of the encoder states is the same for every query position of a request.
        weights = weights + attention_mask[:, :, :1, :]
    weights = nn.functional.softmax(weights, dim=-1)
    output = torch.matmul(weights, value)
    return output.transpose(1, 2).reshape(rows, targets, heads, head_dim), None


AttentionInterface.register(_IMPLEMENTATION, _attention)


@contextmanager
def shared_cross_attention(decoder: nn.Module) -> Iterator[None]:
    """Within the block, ``decoder`` (transformers' BART decoder of Florence-2) reads its cross-attention cache once
    per request (see the module docstring)."""
    config = decoder.config
    previous = config._attn_implementation
    _CROSS_MODULES.update(layer.encoder_attn for layer in decoder.layers)
    config._attn_implementation = _IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = previous
        for layer in decoder.layers:
            _CROSS_MODULES.discard(layer.encoder_attn)
