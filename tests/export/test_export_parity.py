"""fp32 parity of the exported tiny model with PyTorch, each check with a negative control."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from broken_sessions import drop_self_attention_history, ignore_mask, perturbed_copy, scale_outputs

from export.errors import ParityFailed
from export.validate import generation_parity, graph_parity, hf_generate, make_batch, onnx_generate, rules_of

# Prompts other than the exporter's own validation set, at the two image sizes it uses.
TEST_TASKS = (
    ("<CAPTION>", "<OCR_WITH_REGION>"),
    ("<DENSE_REGION_CAPTION>", "<OPEN_VOCABULARY_DETECTION>a red bicycle"),
)


def test_every_graph_matches_pytorch(tiny_model: Any, fp32_sessions: dict[str, Any]) -> None:
    report = graph_parity(tiny_model, fp32_sessions, seed=5)
    assert set(report) == {"vision_encoder", "embed_tokens", "encoder_model", "decoder_model_merged"}
    for graph, figures in report.items():
        assert figures["max_abs_diff"] <= figures["bound"], graph


@pytest.mark.parametrize(
    "graph",
    ["vision_encoder", *(pytest.param(g, marks=pytest.mark.slow) for g in ("encoder_model", "decoder_model_merged"))],
)
def test_graph_parity_fails_on_a_perturbed_weight(
    graph: str, tiny_model: Any, fp32_sessions: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    broken = dict(fp32_sessions)
    broken[graph] = perturbed_copy(tiny_model_dir / "onnx" / f"{graph}.onnx", tmp_path / f"{graph}.onnx")
    with pytest.raises(ParityFailed) as failure:
        graph_parity(tiny_model, broken, seed=5)
    assert failure.value.graph.startswith(graph)
    assert "max abs diff" in failure.value.detail


def test_greedy_generation_is_token_exact(tiny_model: Any, tiny_processor: Any, fp32_sessions: dict[str, Any]) -> None:
    """Every sequence equals transformers' or parts from it at a near tie that float64 PyTorch arbitrates
    (generation_parity raises on anything else, naming the sequence, the step, both tokens and the margins).
    How many sequences part that way depends on the CPU's float rounding, so no count of exact ones is asked."""
    report = generation_parity(tiny_model, tiny_processor, fp32_sessions, tasks=TEST_TASKS, sizes=(768, 384))
    assert report["sequences"] == 8
    assert report["token_exact"] + len(report["near_tie_divergences"]) == 8
    for tie in report["near_tie_divergences"]:
        print(f"near tie, explained: {tie}")
        assert tie["fp64_margin"] <= tie["fp32_noise"]
    # a random model is a witness only if its output depends on its input
    assert report["distinct_sequences"] >= 6
    assert report["generated_tokens"] > 8 * 4


@pytest.mark.slow
def test_parity_without_the_no_repeat_rule(
    tiny_model: Any, tiny_processor: Any, fp32_sessions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the n-gram rule forcing variety, each step's token must still come from the tokens before it: the
    tiny model's greedy output varies within a sequence, so a broken KV cache shows (control below)."""
    monkeypatch.setattr(tiny_model, "generation_config", _without_no_repeat(tiny_model))
    report = generation_parity(tiny_model, tiny_processor, fp32_sessions, tasks=TEST_TASKS, sizes=(384,))
    assert report["min_distinct_tokens_per_sequence"] >= 5, report
    assert report["token_exact"] + len(report["near_tie_divergences"]) == report["sequences"]
    broken = {
        **fp32_sessions,
        "decoder_model_merged": drop_self_attention_history(fp32_sessions["decoder_model_merged"]),
    }
    with pytest.raises(ParityFailed, match=r"differs at position \d+"):
        generation_parity(tiny_model, tiny_processor, broken, tasks=TEST_TASKS, sizes=(384,))


def _without_no_repeat(model: Any) -> Any:
    config = copy.deepcopy(model.generation_config)
    config.no_repeat_ngram_size = 0
    return config


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(
            lambda s: {**s, "decoder_model_merged": drop_self_attention_history(s["decoder_model_merged"])},
            id="dropped-kv-history",
        ),
        pytest.param(
            lambda s: {**s, "vision_encoder": scale_outputs(s["vision_encoder"], 1.05)},
            id="scaled-image-features",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            lambda s: {**s, "encoder_model": ignore_mask(s["encoder_model"], "attention_mask")},
            id="ignored-mask",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_generation_parity_fails_when_something_is_broken(
    break_it: Any, tiny_model: Any, tiny_processor: Any, fp32_sessions: dict[str, Any]
) -> None:
    with pytest.raises(ParityFailed) as failure:
        generation_parity(tiny_model, tiny_processor, break_it(fp32_sessions), tasks=TEST_TASKS[:1], sizes=(384,))
    # the message says which sequence, where, the two tokens, and by how much float64 prefers the reference's
    assert re.search(
        r"greedy generation \(384x384\): '<[A-Z_]+>[^']*' (differs at position \d+ .* prefers \d+ over \d+ by "
        r"[-\d.e]+, more than fp32 rounding moves the logits \([-\d.e]+\)|lengths differ)",
        str(failure.value),
    ), str(failure.value)


def test_padded_batch_equals_each_prompt_alone(
    tiny_model: Any, tiny_processor: Any, fp32_sessions: dict[str, Any]
) -> None:
    """Two prompts of different lengths in one batch: the shorter is padded, and the mask must hide the padding."""
    rules = rules_of(tiny_model)
    tasks = ("<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a green car parked in front of a yellow door")
    batch = make_batch(tiny_processor, tasks, 384, seed=3)
    assert batch.prompt_mask.min() == 0  # the first prompt is padded
    batched = onnx_generate(fp32_sessions, batch, rules, max_new_tokens=16)
    assert np.array_equal(batched, hf_generate(tiny_model, batch, max_new_tokens=16))
    for row in range(2):
        alone = make_batch(tiny_processor, tasks, 384, seed=3)
        length = int(alone.prompt_mask[row].sum())
        single = type(alone)(
            (tasks[row],),
            alone.pixel_values[row : row + 1],
            alone.prompt_ids[row : row + 1, :length],
            alone.prompt_mask[row : row + 1, :length],
        )
        own = onnx_generate(fp32_sessions, single, rules, max_new_tokens=16)[0]
        assert batched[row, : len(own)].tolist() == own.tolist(), f"row {row}"
    # negative control: with the mask ignored the padded row changes
    unmasked = {**fp32_sessions, "encoder_model": ignore_mask(fp32_sessions["encoder_model"], "attention_mask")}
    unmasked["decoder_model_merged"] = ignore_mask(fp32_sessions["decoder_model_merged"], "encoder_attention_mask")
    broken = onnx_generate(unmasked, batch, rules, max_new_tokens=16)
    assert broken[0].tolist() != batched[0].tolist()
    assert broken[1].tolist() == batched[1].tolist()  # the longest prompt has no padding to leak
