"""Prompt ids, decoding and box quantization against transformers' Florence2Processor (the oracle)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from runtime.errors import InvalidTaskInput
from runtime.florence2 import TASKS, Florence2Processor, InputKind, boxes_to_loc_tokens
from runtime.florence2.tokenizer import PromptTokenizer


def parity(max_examples: int) -> settings:
    """Deterministic and bounded: the same examples on every machine and every run."""
    return settings(settings.get_profile("florence2-parity"), max_examples=max_examples)


SMALL_IMAGE = Image.new("RGB", (4, 4), (10, 200, 30))
REGIONS = ["<loc_52><loc_332><loc_932><loc_774>", "<loc_0><loc_0><loc_999><loc_999>", "<loc_7><loc_70><loc_700><loc_7>"]
TEXTS = [
    "A green car parked in front of a door",
    "  leading and trailing spaces  ",
    "Café naïve über 東京 — “quoted” 'single' (paren) [bracket] #tag",
    "punctuation!?.,;:  multiple   spaces\tand\ttabs",
    "emoji 🚗🚪 and combining e\u0301",
    "a car<loc_5>",
    "</s> inside",
    "x",
]


def oracle_input_ids(oracle: Any, text: str) -> list[int]:
    """What transformers feeds the model for one image and this text."""
    return oracle(images=SMALL_IMAGE, text=text, return_tensors=None)["input_ids"][0]


def cases() -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for tag, task in TASKS.items():
        if task.input_kind is InputKind.NONE:
            out.append((tag, None))
        elif task.input_kind is InputKind.REGION:
            out += [(tag, region) for region in REGIONS]
        else:
            out += [(tag, text) for text in TEXTS]
    return out


@pytest.mark.parametrize(("tag", "text_input"), cases())
def test_input_ids_equal_transformers(
    processor: Florence2Processor, oracle: Any, tag: str, text_input: str | None
) -> None:
    expected = oracle_input_ids(oracle, tag + (text_input or ""))
    assert processor.input_ids(tag, text_input) == expected
    prompt = processor.prompt_ids(tag, text_input)
    assert prompt == expected[processor.num_image_tokens :]
    assert prompt[0] == processor.bos_id and prompt[-1] == processor.eos_id
    assert expected[: processor.num_image_tokens] == [processor.image_token_id] * processor.num_image_tokens


def test_special_ids_match_transformers(processor: Florence2Processor, oracle: Any) -> None:
    tok = oracle.tokenizer
    assert tok.is_fast and type(oracle.image_processor).__name__ == "CLIPImageProcessor"  # the default oracle
    assert (processor.bos_id, processor.eos_id, processor.pad_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert processor.image_token_id == oracle.image_token_id
    assert processor.num_image_tokens == oracle.num_image_tokens == 577


free_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: s.strip() and "<image>" not in s and not any(tag in s for tag in TASKS)
)


@parity(150)
@given(text=free_text, tag=st.sampled_from([t for t, k in TASKS.items() if k.input_kind is InputKind.TEXT]))
def test_free_text_prompt_ids_equal_transformers(
    processor: Florence2Processor, oracle: Any, tag: str, text: str
) -> None:
    assert processor.input_ids(tag, text) == oracle_input_ids(oracle, tag + text)


@parity(100)
@given(
    bins=st.lists(st.integers(0, 999), min_size=4, max_size=4),
    pad=st.tuples(st.sampled_from(["", " ", "  \n"]), st.sampled_from(["", " ", "\t"])),
    tag=st.sampled_from([t for t, k in TASKS.items() if k.input_kind is InputKind.REGION]),
)
def test_region_prompt_ids_equal_transformers(
    processor: Florence2Processor, oracle: Any, tag: str, bins: list[int], pad: tuple[str, str]
) -> None:
    region = pad[0] + "".join(f"<loc_{b}>" for b in bins) + pad[1]
    assert processor.input_ids(tag, region) == oracle_input_ids(oracle, tag + region)


def test_comparison_catches_a_prompt_that_keeps_surrounding_spaces(
    processor: Florence2Processor, oracle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: an input that is not stripped as transformers strips it yields other ids."""
    tag, text = "<OPEN_VOCABULARY_DETECTION>", "  a car "
    broken = Florence2Processor(processor.tokenizer, processor.image_config, processor.parse_config)
    monkeypatch.setattr(type(TASKS[tag]), "check_input", lambda self, value: value)
    assert broken.input_ids(tag, text) != oracle_input_ids(oracle, tag + text)


def test_comparison_catches_encoding_with_added_special_tokens(processor: Florence2Processor, oracle: Any) -> None:
    """Negative control: letting the tokenizer add <s> and </s> itself doubles them."""
    tokenizer = processor.tokenizer
    broken = PromptTokenizer(tokenizer._tokenizer, tokenizer.config)
    broken.encode = lambda text: tokenizer._tokenizer.encode(text, add_special_tokens=True).ids  # type: ignore[method-assign]
    ids = Florence2Processor(broken, processor.image_config, processor.parse_config).input_ids("<OD>", None)
    assert ids != oracle_input_ids(oracle, "<OD>")


@pytest.mark.parametrize("add_prefix_space", [True, False])
def test_tokenizer_set_up_like_transformers_when_prefix_space_disagrees(
    checkpoint_variant: Callable[..., Path], add_prefix_space: bool
) -> None:
    """transformers rebuilds the pre-tokenizer from tokenizer_config's add_prefix_space; so must we."""
    from transformers import AutoProcessor

    def flip_json(data: dict[str, Any]) -> None:
        data["pre_tokenizer"]["add_prefix_space"] = not add_prefix_space

    def set_config(data: dict[str, Any]) -> None:
        data["add_prefix_space"] = add_prefix_space

    folder = checkpoint_variant({"tokenizer.json": flip_json, "tokenizer_config.json": set_config})
    ours = Florence2Processor.from_model_dir(folder)
    theirs = AutoProcessor.from_pretrained(folder)
    for tag, text in [("<OPEN_VOCABULARY_DETECTION>", "car door"), ("<CAPTION>", None)]:
        assert ours.input_ids(tag, text) == oracle_input_ids(theirs, tag + (text or ""))


def test_prompt_longer_than_the_model_takes_is_refused(processor: Florence2Processor) -> None:
    assert processor.max_prompt_tokens == 1024 - 577
    with pytest.raises(InvalidTaskInput, match="at most 447; shorten the text input"):
        processor.prompt_ids("<CAPTION_TO_PHRASE_GROUNDING>", "car " * 600)


def test_invalid_task_input_reaches_the_caller(processor: Florence2Processor) -> None:
    with pytest.raises(InvalidTaskInput, match="did you mean <OD>"):
        processor.prompt_ids("<OD_>", None)
    with pytest.raises(InvalidTaskInput, match="takes no input"):
        processor.validate("<OD>", "car")
    processor.validate("<REGION_TO_OCR>", "<loc_1><loc_2><loc_3><loc_4>")


def test_is_text_task(processor: Florence2Processor) -> None:
    assert processor.is_text_task("<CAPTION>") and processor.is_text_task("<REGION_TO_OCR>")
    assert not processor.is_text_task("<OD>") and not processor.is_text_task("<OPEN_VOCABULARY_DETECTION>")


# --- box quantization ----------------------------------------------------------------------------------------------

coordinate = st.one_of(
    st.floats(min_value=-50, max_value=25000, allow_nan=False),
    st.integers(min_value=-50, max_value=25000),
)
image_size = st.one_of(
    st.sampled_from([(1, 1), (2, 2), (20000, 10), (10, 20000), (768, 768), (1024, 768)]),
    st.tuples(st.integers(1, 8000), st.integers(1, 8000)),
)


@parity(500)
@given(box=st.lists(coordinate, min_size=4, max_size=4), size=image_size)
def test_boxes_to_loc_tokens_equal_transformers_quantize(oracle: Any, box: list[float], size: tuple[int, int]) -> None:
    bins = oracle.post_processor.quantize(torch.tensor([box]), size=size)[0].tolist()
    assert boxes_to_loc_tokens(box, size) == "".join(f"<loc_{b}>" for b in bins)


def test_boxes_to_loc_tokens_known_values(oracle: Any) -> None:
    assert boxes_to_loc_tokens([33.6, 160.0, 596.5, 371.9], (640, 480)) == "<loc_52><loc_333><loc_932><loc_774>"
    assert boxes_to_loc_tokens([0, 0, 10**9, -5], (100, 100)) == "<loc_0><loc_0><loc_999><loc_0>"
    # float32 arithmetic, as torch does it: 1 / float32(0.002) is 499.99997, which float64 would make 500.
    assert boxes_to_loc_tokens([1, 1, 1, 1], (2, 2)) == "<loc_499>" * 4
    assert oracle.post_processor.quantize(torch.tensor([[1, 1, 1, 1]]), size=(2, 2)).tolist() == [[499] * 4]


@pytest.mark.parametrize(
    ("box", "size", "message"),
    [
        ([1, 2, 3], (10, 10), "four numbers"),
        ([1, 2, 3, float("nan")], (10, 10), "finite"),
        ([1, 2, 3, float("inf")], (10, 10), "finite"),
        ([1, 2, 3, 4], (0, 10), "positive"),
    ],
)
def test_boxes_to_loc_tokens_refuses_bad_boxes(box: list[float], size: tuple[int, int], message: str) -> None:
    with pytest.raises(InvalidTaskInput, match=message):
        boxes_to_loc_tokens(box, size)


# --- configuration ---------------------------------------------------------------------------------------------


def test_configs_are_frozen(processor: Florence2Processor) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        processor.image_config.height = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        processor.tokenizer.config.bos_token = "x"  # type: ignore[misc]
