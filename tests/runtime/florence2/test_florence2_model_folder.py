"""Loading the processor from a model folder: what it reads, what it refuses, and that it stays torch-free."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runtime.errors import ModelLoadFailed
from runtime.florence2 import Florence2Processor
from runtime.florence2.configs import DEFAULT_OCR_PATTERN, ParseConfig


def test_importing_the_package_loads_no_torch_or_transformers() -> None:
    code = (
        "import sys, runtime.florence2; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'optimum'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reads_the_checkpoint_settings(processor: Florence2Processor) -> None:
    config = processor.image_config
    assert (config.height, config.width, config.resample) == (768, 768, Image.Resampling.BICUBIC)
    assert config.mean == (0.485, 0.456, 0.406) and config.std == (0.229, 0.224, 0.225)
    assert processor.parse_config.ocr_pattern == DEFAULT_OCR_PATTERN
    assert {"it", "the image", "a group"} <= processor.parse_config.banned_grounding_tokens


@pytest.mark.parametrize("missing", ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"])
def test_missing_files_fail_at_load(checkpoint_variant: Callable[..., Path], missing: str) -> None:
    folder = checkpoint_variant({})
    (folder / missing).unlink()
    with pytest.raises(ModelLoadFailed, match=f"{missing} is missing from the model folder"):
        Florence2Processor.from_model_dir(folder)


def test_without_processor_config_the_parse_defaults_apply(checkpoint_variant: Callable[..., Path]) -> None:
    folder = checkpoint_variant({})
    (folder / "processor_config.json").unlink()
    assert Florence2Processor.from_model_dir(folder).parse_config == ParseConfig()


def test_unreadable_json_fails_at_load(checkpoint_variant: Callable[..., Path]) -> None:
    folder = checkpoint_variant({})
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ModelLoadFailed, match=r"cannot read .*preprocessor_config\.json"):
        Florence2Processor.from_model_dir(folder)


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.update(values)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(size={"shortest_edge": 768}), "size must be"),
        (_set(do_resize=False), "do_resize is false"),
        (_set(do_center_crop=True, crop_size={"height": 700, "width": 700}), "center cropping"),
        (_drop("image_seq_length"), "image_seq_length is missing"),
        (_set(resample=42), "unknown resample filter"),
        (_set(image_mean=[0.5]), "one value per RGB channel"),
    ],
)
def test_preprocessing_settings_we_cannot_reproduce_fail_at_load(
    checkpoint_variant: Callable[..., Path], edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    folder = checkpoint_variant({"preprocessor_config.json": edit})
    with pytest.raises(ModelLoadFailed, match=message):
        Florence2Processor.from_model_dir(folder)


def test_center_crop_to_the_resize_size_is_accepted(checkpoint_variant: Callable[..., Path]) -> None:
    folder = checkpoint_variant({"preprocessor_config.json": _set(do_center_crop=True)})
    assert Florence2Processor.from_model_dir(folder).image_config.height == 768


def test_tokenizer_files_that_disagree_fail_at_load(checkpoint_variant: Callable[..., Path]) -> None:
    def move_sep(data: dict[str, Any]) -> None:
        decoder = data["added_tokens_decoder"]
        sep_id = next(i for i, token in decoder.items() if token["content"] == "<sep>")
        decoder[str(int(sep_id) + 1)], decoder[sep_id] = decoder[sep_id], decoder[str(int(sep_id) + 1)]

    folder = checkpoint_variant({"tokenizer_config.json": move_sep})
    with pytest.raises(ModelLoadFailed, match=r"disagree on the id of '(<sep>|<region_cap>)'"):
        Florence2Processor.from_model_dir(folder)


def test_a_tokenizer_without_florence_tokens_fails_at_load(checkpoint_variant: Callable[..., Path]) -> None:
    folder = checkpoint_variant({"tokenizer_config.json": _set(image_token="<img>", extra_special_tokens={})})
    with pytest.raises(ModelLoadFailed, match="the tokenizer has no token '<img>'"):
        Florence2Processor.from_model_dir(folder)


def test_corrupt_tokenizer_json_fails_at_load(checkpoint_variant: Callable[..., Path]) -> None:
    folder = checkpoint_variant({"tokenizer.json": _set(model={"type": "Nonsense"})})
    with pytest.raises(ModelLoadFailed, match=r"cannot load .*tokenizer\.json"):
        Florence2Processor.from_model_dir(folder)
