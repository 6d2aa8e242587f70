"""The exported decoder keeps one cross-attention cache per request; transformers, one per row, is the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch
from transformers.cache_utils import EncoderDecoderCache

from export.graphs import TextDims
from runtime.model_folder import CROSS_CACHE_KEY, EXPORT_DTYPES, PER_REQUEST, file_name, past_names

REQUESTS, BEAMS, PAST, SOURCE = 2, 3, 5, 11


@pytest.fixture(scope="module")
def step(tiny_model: Any) -> dict[str, Any]:
    """One cached decoder step: self-attention KV per row, cross-attention KV per request, a padded request."""
    dims = TextDims.of(tiny_model)
    gen = torch.Generator().manual_seed(3)
    rows = REQUESTS * BEAMS
    feeds: dict[str, Any] = {
        "inputs_embeds": torch.randn(rows, 1, dims.d_model, generator=gen),
        "encoder_hidden_states": torch.randn(REQUESTS, SOURCE, dims.d_model, generator=gen),
        "encoder_attention_mask": torch.ones(REQUESTS, SOURCE, dtype=torch.int64),
    }
    feeds["encoder_attention_mask"][1, -4:] = 0
    for name in past_names(dims.layers):
        batch, length = (rows, PAST) if ".decoder." in name else (REQUESTS, SOURCE)
        feeds[name] = torch.randn(batch, dims.heads, length, dims.head_dim, generator=gen)
    return feeds


def transformers_logits(model: Any, feeds: dict[str, Any]) -> np.ndarray:
    """transformers' decoder with the cross-attention cache repeated for every row of its request."""
    layers = TextDims.of(model).layers
    per_row = {name: value.repeat_interleave(BEAMS, dim=0) for name, value in feeds.items() if ".encoder." in name}
    legacy = tuple(
        tuple(per_row.get(name, feeds[name]) for name in past_names(layers)[4 * i : 4 * i + 4]) for i in range(layers)
    )
    with torch.no_grad():
        out = model.get_decoder()(
            inputs_embeds=feeds["inputs_embeds"],
            encoder_hidden_states=feeds["encoder_hidden_states"].repeat_interleave(BEAMS, dim=0),
            encoder_attention_mask=feeds["encoder_attention_mask"].repeat_interleave(BEAMS, dim=0),
            past_key_values=EncoderDecoderCache.from_legacy_cache(legacy),
            use_cache=True,
        )
        return model.get_output_embeddings()(out.last_hidden_state)[:, -1].numpy()


def onnx_logits(session: Any, feeds: dict[str, Any], rows: np.ndarray | None = None) -> np.ndarray:
    """The merged decoder's cached branch; ``rows`` reorders the self-attention rows (and their inputs)."""
    ort_feeds = {name: value.numpy() for name, value in feeds.items()}
    if rows is not None:
        for name in ort_feeds:
            if name == "inputs_embeds" or ".decoder." in name:
                ort_feeds[name] = ort_feeds[name][rows]
    ort_feeds["use_cache_branch"] = np.array([True])
    declared = {i.name for i in session.get_inputs()}
    (logits,) = session.run(["logits"], {k: v for k, v in ort_feeds.items() if k in declared})
    return logits[:, -1]


def test_rows_of_a_request_read_its_one_cross_attention_cache(
    tiny_model: Any, fp32_sessions: dict[str, Any], step: dict[str, Any]
) -> None:
    expected = transformers_logits(tiny_model, step)
    got = onnx_logits(fp32_sessions["decoder_model_merged"], step)
    assert got.shape == expected.shape == (REQUESTS * BEAMS, TextDims.of(tiny_model).vocab_size)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_check_fails_when_rows_are_not_grouped_by_request(
    tiny_model: Any, fp32_sessions: dict[str, Any], step: dict[str, Any]
) -> None:
    """Interleaved rows (request 0, 1, 0, 1, ...) read the other request's cache: the logits no longer match."""
    interleaved = np.array([0, 3, 1, 4, 2, 5])
    expected = transformers_logits(tiny_model, step)[interleaved]
    got = onnx_logits(fp32_sessions["decoder_model_merged"], step, rows=interleaved)
    assert np.abs(got - expected).max() > 1e-2


# The tiny export's variants; q8 is the int8 conversion, q4's decoder is checked in test_export_variants.py.
@pytest.mark.parametrize("dtype", [d for d in EXPORT_DTYPES if d not in ("q8", "q4")])
def test_every_decoder_variant_declares_the_layout(tiny_model_dir: Any, dtype: str) -> None:
    model = onnx.load(str(tiny_model_dir / "onnx" / file_name("decoder_model_merged", dtype)), load_external_data=False)
    assert {p.key: p.value for p in model.metadata_props}[CROSS_CACHE_KEY] == PER_REQUEST
