"""Pure-text answers are clean text; structured answers stay transformers' ``post_process_generation`` exactly.

transformers decodes with ``skip_special_tokens=False`` and so keeps ``<pad>`` in a caption (its own integration test
for Florence-2-large expects ``...yellow building<pad><pad>...``). The engine's answer for a pure-text task is the
text of the generated ids decoded with ``skip_special_tokens=True``, then post-processed as transformers does.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.florence2 import TASKS, Florence2Processor

TEXT_TAGS = sorted(tag for tag, task in TASKS.items() if task.is_text)
STRUCTURED_TAGS = sorted(tag for tag, task in TASKS.items() if not task.is_text)
SIZE = (640, 480)


def ids_of(processor: Florence2Processor, *pieces: str) -> list[int]:
    """Token ids of the pieces: special tokens by their id, other text through the tokenizer."""
    tok = processor.tokenizer
    out: list[int] = []
    for piece in pieces:
        token_id = tok._tokenizer.token_to_id(piece)
        out.extend([token_id] if token_id is not None else tok.encode(piece))
    return out


def test_a_caption_with_padding_is_clean(processor: Florence2Processor, oracle: Any) -> None:
    caption = "A green car parked in front of a yellow building."
    ids = ids_of(processor, "</s>", "<s>", caption, "<pad>", "<pad>", "</s>")
    kept = processor.decode(ids)
    assert kept.endswith("building.<pad><pad></s>")
    # transformers' own answer keeps the padding: the negative control of the assertion below.
    assert oracle.post_process_generation(kept, task="<CAPTION>", image_size=SIZE)["<CAPTION>"].endswith("<pad><pad>")
    assert processor.answer(ids, "<CAPTION>", SIZE) == {"<CAPTION>": caption}


def test_a_region_category_drops_its_location_tokens(processor: Florence2Processor) -> None:
    ids = ids_of(processor, "<s>", "car", "<loc_52>", "<loc_333>", "<loc_932>", "<loc_774>", "</s>")
    assert processor.post_process(processor.decode(ids), "<REGION_TO_CATEGORY>", SIZE) == {
        "<REGION_TO_CATEGORY>": "car<loc_52><loc_333><loc_932><loc_774>"
    }
    assert processor.answer(ids, "<REGION_TO_CATEGORY>", SIZE) == {"<REGION_TO_CATEGORY>": "car"}


def test_structured_answers_keep_the_tokens_they_parse(processor: Florence2Processor) -> None:
    ids = ids_of(processor, "</s>", "<s>", "car", "<loc_52>", "<loc_333>", "<loc_932>", "<loc_774>", "<pad>", "</s>")
    assert processor.answer(ids, "<OD>", SIZE) == {"<OD>": {"bboxes": [[33, 160, 596, 371]], "labels": ["car"]}}


@settings(settings.get_profile("florence2-parity"), max_examples=300)
@given(data=st.data())
def test_answers_equal_transformers_decoding(processor: Florence2Processor, oracle: Any, data: st.DataObject) -> None:
    """Random id sequences mixing words and special ids: text tasks get transformers' skip_special_tokens=True
    text, post-processed; structured tasks get transformers' result unchanged."""
    specials = sorted(processor.special_ids)
    words = sorted(set(processor.tokenizer.encode(" a car. door 東京 it's")))
    ids = data.draw(st.lists(st.one_of(st.sampled_from(specials), st.sampled_from(words)), max_size=24))
    tag = data.draw(st.sampled_from(sorted(TASKS)))
    clean = TASKS[tag].is_text
    text = oracle.batch_decode([ids], skip_special_tokens=clean)[0]
    assert processor.answer(ids, tag, SIZE) == oracle.post_process_generation(text, task=tag, image_size=SIZE)


def test_special_ids_are_what_transformers_skips(processor: Florence2Processor, oracle: Any) -> None:
    assert processor.special_ids == frozenset(oracle.tokenizer.all_special_ids)
    assert {processor.pad_id, processor.bos_id, processor.eos_id} <= processor.special_ids
