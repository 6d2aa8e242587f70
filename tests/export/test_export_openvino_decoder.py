"""The merged decoder's two parts (export/openvino_decoder.py): written by the exporter and by the command, equal to
the merged graph's branches, sharing its weights, and compiled by OpenVINO."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.errors import ExportError
from export.openvino_decoder import add_decoder_parts, main, split_merged_decoder
from runtime.model_folder import CROSS_CACHE_KEY, DECODER, PER_REQUEST, decoder_part_files, file_name

TINY_DTYPES = ("fp32", "fp16", "int8")  # what tests/conftest.py exports


def feeds_of(session: ort.InferenceSession, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: values[i.name] for i in session.get_inputs()}


def two_steps(onnx_dir: Path, dtype: str) -> dict[str, Any]:
    """A first step and a cached step through the merged decoder and through its parts."""
    merged = ort.InferenceSession(str(onnx_dir / file_name(DECODER, dtype)))
    no_past, with_past = (ort.InferenceSession(str(onnx_dir / name)) for name in decoder_part_files(dtype))
    specs = {i.name: i for i in merged.get_inputs()}
    d_model = specs["inputs_embeds"].shape[2]
    heads, head_dim = specs["past_key_values.0.decoder.key"].shape[1], specs["past_key_values.0.decoder.key"].shape[3]
    rng = np.random.default_rng(0)
    values: dict[str, np.ndarray] = {
        "inputs_embeds": rng.standard_normal((2, 1, d_model)).astype(np.float32),
        "encoder_hidden_states": rng.standard_normal((2, 7, d_model)).astype(np.float32),
        "encoder_attention_mask": np.array([[1] * 7, [1] * 5 + [0] * 2], np.int64),
        "use_cache_branch": np.array([False]),
        **{n: np.zeros((2, heads, 0, head_dim), np.float32) for n in specs if n.startswith("past_key_values.")},
    }
    first = dict(zip([o.name for o in merged.get_outputs()], merged.run(None, values), strict=True))
    first_part = dict(
        zip([o.name for o in no_past.get_outputs()], no_past.run(None, feeds_of(no_past, values)), strict=True)
    )
    cached = {
        **values,
        "inputs_embeds": rng.standard_normal((2, 1, d_model)).astype(np.float32),
        "use_cache_branch": np.array([True]),
        **{n: first[n.replace("past_key_values", "present")] for n in specs if n.startswith("past_key_values.")},
    }
    second = dict(zip([o.name for o in merged.get_outputs()], merged.run(None, cached), strict=True))
    second_part = dict(
        zip([o.name for o in with_past.get_outputs()], with_past.run(None, feeds_of(with_past, cached)), strict=True)
    )
    return {"first": (first, first_part), "second": (second, second_part), "parts": (no_past, with_past)}


@pytest.mark.parametrize("dtype", TINY_DTYPES)
def test_parts_compute_exactly_what_the_merged_branches_compute(tiny_model_dir: Path, dtype: str) -> None:
    run = two_steps(tiny_model_dir / "onnx", dtype)
    (first, first_part), (second, second_part) = run["first"], run["second"]
    assert set(first_part) == set(first)
    for name, value in first_part.items():
        np.testing.assert_array_equal(value, first[name], err_msg=name)
    # The cached part returns only what changes: logits and the self-attention KV.
    assert set(second_part) == {n for n in second if not (n.startswith("present.") and ".encoder." in n)}
    for name, value in second_part.items():
        np.testing.assert_array_equal(value, second[name], err_msg=name)
    no_past, with_past = run["parts"]
    assert "use_cache_branch" not in {i.name for i in [*no_past.get_inputs(), *with_past.get_inputs()]}
    assert not any(i.name.startswith("past_key_values.") for i in no_past.get_inputs())


def test_a_changed_part_is_caught(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Negative control: a part whose weights differ from the merged graph's fails the comparison above."""
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(tiny_model_dir / "onnx", onnx_dir)
    _, with_past_name = decoder_part_files("fp32")
    model = onnx.load(str(onnx_dir / with_past_name))  # with its weights: saved inline below
    logits_node = next(n for n in model.graph.node if "logits" in n.output)
    weight = next(t for t in model.graph.initializer if t.name in logits_node.input)
    array = onnx.numpy_helper.to_array(weight) * np.float32(1.001)
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(onnx_dir / with_past_name))
    _, (second, second_part) = two_steps(onnx_dir, "fp32")["first"], two_steps(onnx_dir, "fp32")["second"]
    assert not np.array_equal(second_part["logits"], second["logits"])


@pytest.mark.parametrize("dtype", TINY_DTYPES)
def test_parts_share_the_merged_weights_file(tiny_model_dir: Path, dtype: str) -> None:
    onnx_dir = tiny_model_dir / "onnx"
    merged_data = file_name(DECODER, dtype) + "_data"
    for name in decoder_part_files(dtype):
        model = onnx.load(str(onnx_dir / name), load_external_data=False)
        locations = {
            entry.value for t in model.graph.initializer for entry in t.external_data if entry.key == "location"
        }
        assert locations == {merged_data}, name
        assert not (onnx_dir / (name + "_data")).exists()
        assert (onnx_dir / name).stat().st_size < (onnx_dir / merged_data).stat().st_size
        assert {p.key: p.value for p in model.metadata_props}[CROSS_CACHE_KEY] == PER_REQUEST


def test_the_command_adds_the_parts_to_a_folder_without_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    for dtype in TINY_DTYPES:
        for name in decoder_part_files(dtype):
            (folder / "onnx" / name).unlink()
    assert main([str(folder), "--dtype", "int8"]) == 0
    assert all((folder / "onnx" / name).is_file() for name in decoder_part_files("int8"))
    assert not (folder / "onnx" / decoder_part_files("fp32")[0]).exists()
    written = add_decoder_parts(folder)
    assert sorted(p.name for p in written) == sorted(n for d in TINY_DTYPES for n in decoder_part_files(d))
    assert "onnx/decoder_model.onnx" in (folder / "export.json").read_text()
    two_steps(folder / "onnx", "fp32")  # the parts run


def test_the_command_refuses_what_is_not_a_merged_decoder(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no merged decoder"):
        add_decoder_parts(tmp_path)
    encoder = onnx.load(str(tiny_model_dir / "onnx" / "encoder_model.onnx"), load_external_data=False)
    with pytest.raises(ExportError, match="not a merged decoder"):
        split_merged_decoder(encoder)
    with pytest.raises(ExportError, match="no merged decoder of q4"):
        add_decoder_parts(tiny_model_dir, ["q4"])


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_openvino_compiles_the_parts_and_refuses_the_merged_graph(tiny_model_dir: Path, dtype: str) -> None:
    openvino = pytest.importorskip("openvino")
    core = openvino.Core()
    for name in decoder_part_files(dtype):
        core.compile_model(core.read_model(str(tiny_model_dir / "onnx" / name)), "CPU")
    # The reason the parts exist; if OpenVINO learns to compile the merged graph, this says so.
    with pytest.raises(RuntimeError, match="If"):
        core.compile_model(core.read_model(str(tiny_model_dir / "onnx" / file_name(DECODER, dtype))), "CPU")
