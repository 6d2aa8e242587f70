"""fp16 and int8 variants: they load, give finite outputs, and stay close to fp32 by cosine similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from broken_sessions import perturbed_copy, scale_outputs

from export.errors import ParityFailed
from export.greedy import open_sessions
from export.validate import (
    VALIDATION_TASKS,
    VARIANT_MIN_COSINE,
    first_step_logits,
    make_batch,
    reference_first_step_logits,
    row_cosine,
    rules_of,
    variant_closeness,
)


@pytest.fixture(scope="module")
def batch_and_reference(tiny_model: Any, tiny_processor: Any) -> tuple[Any, np.ndarray]:
    batch = make_batch(tiny_processor, VALIDATION_TASKS[1], 384, seed=11)
    return batch, reference_first_step_logits(tiny_model, batch, rules_of(tiny_model))


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_variant_is_finite_and_close_to_fp32(
    dtype: str, tiny_model: Any, tiny_model_dir: Path, fp32_sessions: dict[str, Any], batch_and_reference: Any
) -> None:
    batch, reference = batch_and_reference
    variant = open_sessions(tiny_model_dir, dtype)
    logits = first_step_logits(variant, batch, rules_of(tiny_model))
    assert np.isfinite(logits).all()
    report = variant_closeness(fp32_sessions, variant, dtype, batch, rules_of(tiny_model), reference)
    for graph, cosine in report["min_cosine_vs_fp32_graph"].items():
        assert cosine >= VARIANT_MIN_COSINE[dtype][graph], graph
    # the stated measure for the decoder (logits given the same encoder states): int8 cosine >= 0.98, fp16 >= 0.99
    assert report["min_cosine_vs_fp32_graph"]["decoder_model_merged"] >= {"fp16": 0.99, "int8": 0.98}[dtype]
    assert row_cosine(logits, reference) > 0.5  # end to end through the chaotic tiny model, still clearly related


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_variant_check_fails_on_a_broken_graph(
    dtype: str,
    tiny_model: Any,
    tiny_model_dir: Path,
    fp32_sessions: dict[str, Any],
    batch_and_reference: Any,
    tmp_path: Path,
) -> None:
    batch, reference = batch_and_reference
    variant = open_sessions(tiny_model_dir, dtype)
    rules = rules_of(tiny_model)
    broken = {**variant, "decoder_model_merged": perturbed_copy(
        tiny_model_dir / "onnx" / f"decoder_model_merged_{dtype}.onnx", tmp_path / "decoder.onnx", scale=1.0
    )}  # fmt: skip
    with pytest.raises(ParityFailed, match=f"decoder_model_merged_{dtype}"):
        variant_closeness(fp32_sessions, broken, dtype, batch, rules, reference)
    nan_features = {**variant, "vision_encoder": scale_outputs(variant["vision_encoder"], float("nan"))}
    with pytest.raises(ParityFailed, match="NaN or inf"):
        variant_closeness(fp32_sessions, nan_features, dtype, batch, rules, reference)
