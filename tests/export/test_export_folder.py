"""The exported tiny model folder: files, tensor names, dynamic axes, and what export.json records."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from export.folder import HF_FILES
from export.trace import graph_initializers
from runtime.model_folder import GRAPHS, decoder_part_files, file_name, past_names

TINY_DTYPES = ("fp32", "fp16", "int8")  # what tests/conftest.py exports; q4 is added in test_export_variants.py


def _session(model_dir: Path, graph: str, dtype: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / "onnx" / file_name(graph, dtype)), providers=["CPUExecutionProvider"])


def test_folder_holds_the_contract_files(tiny_model_dir: Path) -> None:
    for name in (*HF_FILES, "export.json"):
        assert (tiny_model_dir / name).is_file(), name
    onnx_files = sorted(p.name for p in (tiny_model_dir / "onnx").iterdir())
    graphs = [file_name(g, d) for g in GRAPHS for d in TINY_DTYPES]
    # the decoder's two parts (for OpenVINO) read the merged decoder's weights file: no side file of their own
    parts = [name for d in TINY_DTYPES for name in decoder_part_files(d)]
    assert onnx_files == sorted([*graphs, *(f"{graph}_data" for graph in graphs), *parts])


@pytest.mark.parametrize("dtype", TINY_DTYPES)
def test_weights_live_beside_each_graph(tiny_model_dir: Path, dtype: str) -> None:
    """Every initializer of 1 KiB or more is in ``<graph>.onnx_data`` (ONNX Runtime maps it), none inline."""
    for graph in GRAPHS:
        name = file_name(graph, dtype)
        model = onnx.load(str(tiny_model_dir / "onnx" / name), load_external_data=False)
        tensors = graph_initializers(model.graph)
        external = [t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external, name
        assert {e.value for t in external for e in t.external_data if e.key == "location"} == {f"{name}_data"}
        inline = [t.name for t in tensors if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) >= 1024]
        assert not inline, (name, inline)


@pytest.mark.parametrize("dtype", TINY_DTYPES)
def test_graphs_load_with_the_contract_tensor_names(tiny_model_dir: Path, dtype: str) -> None:
    layers = json.loads((tiny_model_dir / "config.json").read_text())["text_config"]["decoder_layers"]
    expected = {
        "vision_encoder": ({"pixel_values"}, ["image_features"]),
        "embed_tokens": ({"input_ids"}, ["inputs_embeds"]),
        "encoder_model": ({"inputs_embeds", "attention_mask"}, ["last_hidden_state"]),
        "decoder_model_merged": (
            {
                "inputs_embeds",
                "encoder_hidden_states",
                "encoder_attention_mask",
                "use_cache_branch",
                *past_names(layers),
            },
            ["logits", *past_names(layers, "present")],
        ),
    }
    for graph, (inputs, outputs) in expected.items():
        session = _session(tiny_model_dir, graph, dtype)
        assert {i.name for i in session.get_inputs()} == inputs, graph
        assert [o.name for o in session.get_outputs()] == outputs, graph
        # keep_io_types: every variant takes and returns fp32, so the runtime feeds all variants alike
        float_io = [i for i in session.get_inputs() if "float" in i.type] + list(session.get_outputs())
        assert all(t.type == "tensor(float)" for t in float_io), graph


def test_axes_are_dynamic(tiny_model_dir: Path) -> None:
    vision = _session(tiny_model_dir, "vision_encoder", "fp32").get_inputs()[0]
    assert [isinstance(d, str) for d in vision.shape] == [True, False, True, True]  # batch, 3, height, width
    decoder = {i.name: i.shape for i in _session(tiny_model_dir, "decoder_model_merged", "fp32").get_inputs()}
    assert all(isinstance(d, str) for d in decoder["inputs_embeds"][:2])
    assert all(isinstance(d, str) for d in decoder["encoder_hidden_states"][:2])
    assert isinstance(decoder["past_key_values.0.decoder.key"][2], str)
    assert decoder["use_cache_branch"] == [1]


def test_hf_files_carry_what_the_runtime_reads(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    tokenizer_config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    preprocessor = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    processor = json.loads((tiny_model_dir / "processor_config.json").read_text())
    assert config["random_weights"] is True
    assert tokenizer_config["added_tokens_decoder"][str(config["image_token_id"])]["content"] == "<image>"
    assert tokenizer_config["extra_special_tokens"] == {"image_token": "<image>"}
    assert preprocessor["image_seq_length"] == (preprocessor["size"]["height"] // 32) ** 2 + 1
    assert {"ocr", "phrase_grounding", "pure_text", "bboxes", "polygons"} <= set(processor["post_processor_config"])


def test_export_json_records_provenance_sizes_and_parity(tiny_model_dir: Path, tiny_checkpoint: Path) -> None:
    record = json.loads((tiny_model_dir / "export.json").read_text())
    assert record["source"] == str(tiny_checkpoint)
    assert record["source_format"] == "native"
    assert record["dtypes"] == list(TINY_DTYPES)
    assert record["opset"] == 17
    assert {"torch", "transformers", "onnx", "onnxruntime", "optimum-onnx"} <= set(record["versions"])
    assert record["export_seconds"] > 0
    for rel, size in record["files"].items():
        assert (tiny_model_dir / rel).stat().st_size == size, rel
    parity = record["parity"]
    for graph, figures in parity["fp32"]["graphs"].items():
        assert figures["max_abs_diff"] <= figures["bound"], graph
    generation = parity["fp32"]["generation"]
    assert generation["sequences"] >= 8
    assert generation["token_exact"] + len(generation["near_tie_divergences"]) == generation["sequences"]
    assert generation["image_sizes"] == [768, 384]
    for dtype in ("fp16", "int8"):
        for graph, cosine in parity[dtype]["min_cosine_vs_fp32_graph"].items():
            assert cosine >= parity[dtype]["bounds"][graph], (dtype, graph)
