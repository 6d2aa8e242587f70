"""The model-folder layout: file names per variant, the decoder's forms, what q4 shares; owned by one module."""

from __future__ import annotations

from pathlib import Path

from runtime.model_folder import (
    DECODER,
    EXPORT_DTYPES,
    GRAPHS,
    VARIANTS,
    decoder_part_files,
    file_name,
    graph_dtype,
    past_names,
    requires,
)

ROOT = Path(__file__).resolve().parents[2]


def test_file_names_follow_transformers_js_suffixes() -> None:
    assert file_name(DECODER, "fp32") == "decoder_model_merged.onnx"
    assert file_name("vision_encoder", "q8") == "vision_encoder_quantized.onnx"
    assert decoder_part_files("int8") == ("decoder_model_int8.onnx", "decoder_with_past_model_int8.onnx")
    assert set(EXPORT_DTYPES) <= set(VARIANTS)
    assert GRAPHS[-1] == DECODER


def test_q4_reads_the_int8_conversion_of_the_compute_bound_graphs() -> None:
    assert requires("q4") == ("int8",) and requires("int8") == ()
    assert graph_dtype("vision_encoder", "q4") == "int8"
    assert graph_dtype(DECODER, "q4") == "q4"


def test_past_names_are_ordered_per_layer() -> None:
    assert past_names(1) == [
        "past_key_values.0.decoder.key",
        "past_key_values.0.decoder.value",
        "past_key_values.0.encoder.key",
        "past_key_values.0.encoder.value",
    ]


def test_no_other_module_spells_the_layout() -> None:
    """The suffix table and the decoder's file names are written once (runtime/ and export/ import them)."""
    owners = []
    for folder in ("runtime", "export"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if '"_quantized"' in text or '"decoder_with_past_model"' in text or '"decoder_model_merged"' in text:
                owners.append(str(path.relative_to(ROOT)))
    assert owners == ["runtime/model_folder.py"]
