"""The analytic KV cache of bench/kv_cache.py against the arrays a decoder really holds: the tiny model's merged
decoder run step by step through ONNX Runtime, and arrays of the shapes its graph declares for beam rows."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bench.artefacts import graph_path
from bench.flops import TextShape
from bench.kv_cache import DecoderCache, decoder_layout, kv_cache

PAST = re.compile(r"past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)")


def _session(model_dir: Path, variant: str) -> ort.InferenceSession:
    path = graph_path(model_dir, "decoder_model_merged", variant)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _held_cache(session: ort.InferenceSession, rows: int, encoder_tokens: int, steps: int) -> dict[str, np.ndarray]:
    """What a decoder keeps after ``steps`` steps of ``rows`` rows: the self-attention KV of the last step and the
    cross-attention KV of the first (later steps return it empty)."""
    inputs = {i.name: i for i in session.get_inputs()}
    d_model = inputs["encoder_hidden_states"].shape[2]
    rng = np.random.default_rng(0)
    base = {
        "encoder_hidden_states": rng.standard_normal((rows, encoder_tokens, d_model)).astype(np.float32),
        "encoder_attention_mask": np.ones((rows, encoder_tokens), np.int64),
    }
    past = {
        name: np.zeros((rows, spec.shape[1], 0, spec.shape[3]), np.float16 if "16" in spec.type else np.float32)
        for name, spec in inputs.items()
        if PAST.fullmatch(name)
    }
    outputs = [o.name for o in session.get_outputs() if o.name.startswith("present.")]
    held: dict[str, np.ndarray] = {}
    for step in range(steps):
        feeds = {
            **base,
            **past,
            "inputs_embeds": rng.standard_normal((rows, 1, d_model)).astype(np.float32),
            "use_cache_branch": np.array([step > 0]),
        }
        presents = dict(
            zip(outputs, session.run(outputs, {k: v for k, v in feeds.items() if k in inputs}), strict=True)
        )
        for name, value in presents.items():
            if step == 0 or ".decoder." in name:  # the cached branch returns the cross-attention KV empty
                held[name] = value
                past["past_key_values" + name[len("present") :]] = value
    return held


@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_the_formula_is_the_size_of_a_real_decoder_run(tiny_model_dir: Path, variant: str) -> None:
    cache = DecoderCache.from_model_dir(tiny_model_dir, variant)
    session = _session(tiny_model_dir, variant)
    requests, encoder_tokens, steps = 3, 23, 5
    held = _held_cache(session, requests, encoder_tokens, steps)
    assert {a.dtype.itemsize for a in held.values()} == {cache.itemsize}  # what the graph returns, not its weights
    self_bytes = sum(a.nbytes for name, a in held.items() if ".decoder." in name)
    cross_bytes = sum(a.nbytes for name, a in held.items() if ".encoder." in name)
    one_beam = kv_cache(cache.text, requests, 1, encoder_tokens, steps, cache.itemsize)
    assert (one_beam.self_bytes, one_beam.cross_bytes) == (self_bytes, cross_bytes)
    # a step more or one encoder token more is another size: the counts are not merely proportional
    assert kv_cache(cache.text, requests, 1, encoder_tokens, steps + 1, cache.itemsize).self_bytes != self_bytes
    assert kv_cache(cache.text, requests, 1, encoder_tokens + 1, steps, cache.itemsize).cross_bytes != cross_bytes


@pytest.mark.parametrize("cross_rows", ["request", "row"])
def test_beam_rows_as_the_graph_declares_them(tiny_model_dir: Path, cross_rows: str) -> None:
    """Arrays shaped as the graph's past inputs (its heads and head size, not config.json's d_model), one per
    decoder layer, key and value, with the cross-attention cache per request or per row."""
    declared = DecoderCache.from_model_dir(tiny_model_dir, "fp32")
    assert declared.cross_rows == "request"  # the exporter's decoder says so in its metadata
    cache = dataclasses.replace(declared, cross_rows=cross_rows)
    assert cache.beams == 3  # the tiny model's generation config, as Florence-2-large's
    requests, encoder_tokens, tokens = 4, 31, 7
    rows = requests * cache.beams
    dtype = np.dtype(f"f{cache.itemsize}")
    arrays = []
    for spec in _session(tiny_model_dir, "fp32").get_inputs():
        match = PAST.fullmatch(spec.name)
        if not match:
            continue
        _, heads, _, head_dim = spec.shape
        if match.group(2) == "decoder":
            arrays.append(np.zeros((rows, heads, tokens, head_dim), dtype))
        else:
            arrays.append(
                np.zeros((requests if cross_rows == "request" else rows, heads, encoder_tokens, head_dim), dtype)
            )
    figure = cache.at(requests, encoder_tokens, tokens)
    assert len(arrays) == 4 * cache.text.decoder_layers
    assert figure.total_bytes == sum(a.nbytes for a in arrays)
    assert (figure.rows, figure.cross_rows) == (rows, cross_rows)


def test_florence_2_large_at_eight_requests_of_three_beams() -> None:
    """By hand: 12 decoder layers x (key + value) x 1024 x 4 bytes = 96 KiB per position of one row."""
    large = TextShape(
        d_model=1024, encoder_layers=12, decoder_layers=12, encoder_ffn=4096, decoder_ffn=4096, vocab_size=51289
    )
    shared = kv_cache(large, requests=8, beams=3, encoder_tokens=577 + 9, self_tokens=128, itemsize=4)
    per_row = kv_cache(large, 8, 3, 577 + 9, 128, 4, cross_rows="row")
    assert shared.self_bytes == per_row.self_bytes == 24 * 128 * 96 * 1024  # 288 MiB
    assert shared.cross_bytes == 8 * 586 * 96 * 1024  # 439.5 MiB
    assert per_row.cross_bytes == 3 * shared.cross_bytes
    assert shared.to_dict()["bytes"] == shared.self_bytes + shared.cross_bytes


def test_an_unknown_cross_rows_is_refused() -> None:
    text = TextShape(d_model=8, encoder_layers=1, decoder_layers=1, encoder_ffn=8, decoder_ffn=8, vocab_size=10)
    with pytest.raises(ValueError, match="request, row"):
        kv_cache(text, 1, 1, 1, 1, 4, cross_rows="beam")  # type: ignore[arg-type]


def test_a_graph_without_a_cache_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="no present"):
        decoder_layout(graph_path(tiny_model_dir, "encoder_model", "fp32"))
