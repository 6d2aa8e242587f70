"""fp16, int8 and q4 variants: they load, give finite outputs, and stay close to fp32 by cosine similarity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from broken_sessions import perturbed_copy, scale_outputs

from export.add_variant import add_variant
from export.errors import ExportError, ParityFailed
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
from runtime.model_folder import CROSS_CACHE_KEY, PER_REQUEST, file_name


@pytest.fixture(scope="module")
def q4_model_dir(tiny_model_dir: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny export with the q4 decoder added the way an existing folder gets it."""
    folder = tmp_path_factory.mktemp("q4") / "model"
    shutil.copytree(tiny_model_dir, folder)
    add_variant(folder, tiny_checkpoint, "q4")
    return folder


def _variant_dir(dtype: str, request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("q4_model_dir" if dtype == "q4" else "tiny_model_dir")


@pytest.fixture(scope="module")
def batch_and_reference(tiny_model: Any, tiny_processor: Any) -> tuple[Any, np.ndarray]:
    batch = make_batch(tiny_processor, VALIDATION_TASKS[1], 384, seed=11)
    return batch, reference_first_step_logits(tiny_model, batch, rules_of(tiny_model))


@pytest.mark.parametrize("dtype", ["fp16", "int8", "q4"])
def test_variant_is_finite_and_close_to_fp32(
    dtype: str, tiny_model: Any, fp32_sessions: dict[str, Any], batch_and_reference: Any, request: pytest.FixtureRequest
) -> None:
    batch, reference = batch_and_reference
    variant = open_sessions(_variant_dir(dtype, request), dtype)
    logits = first_step_logits(variant, batch, rules_of(tiny_model))
    assert np.isfinite(logits).all()
    report = variant_closeness(fp32_sessions, variant, dtype, batch, rules_of(tiny_model), reference)
    for graph, cosine in report["min_cosine_vs_fp32_graph"].items():
        assert cosine >= VARIANT_MIN_COSINE[dtype][graph], graph
    # the stated measure for the decoder (logits given the same encoder states): int8 cosine >= 0.98, fp16 >= 0.99
    stated = {"fp16": 0.99, "int8": 0.98, "q4": 0.85}[dtype]
    assert report["min_cosine_vs_fp32_graph"]["decoder_model_merged"] >= stated
    assert row_cosine(logits, reference) > 0.5  # end to end through the chaotic tiny model, still clearly related


@pytest.mark.parametrize("dtype", ["fp16", "int8", "q4"])
def test_variant_check_fails_on_a_broken_graph(
    dtype: str,
    tiny_model: Any,
    fp32_sessions: dict[str, Any],
    batch_and_reference: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    batch, reference = batch_and_reference
    model_dir = _variant_dir(dtype, request)
    variant = open_sessions(model_dir, dtype)
    rules = rules_of(tiny_model)
    broken = {**variant, "decoder_model_merged": perturbed_copy(
        model_dir / "onnx" / f"decoder_model_merged_{dtype}.onnx", tmp_path / "decoder.onnx", scale=1.0
    )}  # fmt: skip
    with pytest.raises(ParityFailed, match=f"decoder_model_merged_{dtype}"):
        variant_closeness(fp32_sessions, broken, dtype, batch, rules, reference)
    nan_features = {**variant, "vision_encoder": scale_outputs(variant["vision_encoder"], float("nan"))}
    with pytest.raises(ParityFailed, match="NaN or inf"):
        variant_closeness(fp32_sessions, nan_features, dtype, batch, rules, reference)


def _op_types(graph: onnx.GraphProto) -> set[str]:
    found = {node.op_type for node in graph.node}
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found |= _op_types(attr.g)
    return found


def test_q4_is_a_4bit_decoder_beside_the_int8_graphs_and_recorded(q4_model_dir: Path) -> None:
    from runtime.engine.variants import GRAPHS, find_graph_files

    decoder = onnx.load(str(q4_model_dir / "onnx" / "decoder_model_merged_q4.onnx"))
    ops = _op_types(decoder.graph)
    assert "MatMulNBits" in ops
    bits = {a.i for n in decoder.graph.node for a in n.attribute if a.name == "bits"}
    assert bits <= {4}
    assert {p.key: p.value for p in decoder.metadata_props}[CROSS_CACHE_KEY] == PER_REQUEST  # the decoder layout
    record = json.loads((q4_model_dir / "export.json").read_text())
    assert record["dtypes"][-1] == "q4"
    assert record["graphs"]["q4"]["decoder_model_merged"] == "onnx/decoder_model_merged_q4.onnx"
    # transformers.js's q4 asks for all four graphs: the compute-bound ones hold the int8 conversion
    assert record["graphs"]["q4"]["vision_encoder"] == "onnx/vision_encoder_q4.onnx"
    for graph in ("vision_encoder", "embed_tokens", "encoder_model"):
        plain = onnx.load(str(q4_model_dir / "onnx" / f"{graph}_q4.onnx"))
        assert "MatMulNBits" not in _op_types(plain.graph)
        assert _op_types(plain.graph) == _op_types(onnx.load(str(q4_model_dir / "onnx" / f"{graph}_int8.onnx")).graph)
        assert (q4_model_dir / "onnx" / f"{graph}_q4.onnx_data").is_file()
    parity = record["parity"]["q4"]
    for graph, cosine in parity["min_cosine_vs_fp32_graph"].items():
        assert cosine >= parity["bounds"][graph], graph
    assert 0.0 <= parity["greedy_token_agreement_vs_fp32"] <= 1.0
    files = record["files"]
    weights = {d: files[f"onnx/{file_name('decoder_model_merged', d)}_data"] for d in ("fp32", "q4")}
    assert weights["q4"] < weights["fp32"] / 2
    # the runtime resolves the same files as the exporter recorded
    resolved = {g: find_graph_files(q4_model_dir / "onnx", g, "q4")[0].paths[0].name for g in GRAPHS}
    assert resolved == {g: Path(path).name for g, path in record["graphs"]["q4"].items()}


def test_add_variant_needs_the_int8_graphs(tiny_model_dir: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    record = json.loads((folder / "export.json").read_text())
    record["dtypes"] = ["fp32"]
    (folder / "export.json").write_text(json.dumps(record))
    with pytest.raises(ExportError, match="int8"):
        add_variant(folder, tiny_checkpoint, "q4", validate=False)
    assert not (folder / "onnx" / "decoder_model_merged_q4.onnx").exists()
