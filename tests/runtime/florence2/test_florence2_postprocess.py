"""Decoding and post-processing against transformers' Florence2Processor.post_process_generation."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import runtime.florence2.postprocess as postprocess_module
from runtime.florence2 import TASKS, Florence2Processor
from runtime.florence2.configs import DEFAULT_OCR_PATTERN

# One task per answer format: tasks sharing a format share a parser.
TASK_PER_FORMAT = {task.parse_type: tag for tag, task in reversed(TASKS.items())}
REPRESENTATIVE_TAGS = sorted(TASK_PER_FORMAT.values())
INT32_MIN = -(2**31)


def parity(max_examples: int) -> settings:
    """Deterministic and bounded: the same examples on every machine and every run."""
    return settings(settings.get_profile("florence2-parity"), max_examples=max_examples)


def same(ours: Any, theirs: Any) -> bool:
    """Equal values, types (1 is not 1.0), key order and label strings."""
    return ours == theirs and json.dumps(ours, ensure_ascii=False) == json.dumps(theirs, ensure_ascii=False)


def expected(oracle: Any, text: str, tag: str, size: tuple[int, int]) -> dict[str, Any]:
    return oracle.post_process_generation(text=text, task=tag, image_size=size)


# --- the documented examples ---------------------------------------------------------------------------------------

LOC = "<loc_{}>".format
CAR = "<loc_52><loc_333><loc_932><loc_774>"
DOOR = "<loc_100><loc_20><loc_300><loc_600>"
QUAD_1 = "".join(LOC(v) for v in (10, 20, 110, 20, 110, 60, 10, 60))
QUAD_2 = "".join(LOC(v) for v in (500, 500, 900, 510, 895, 580, 498, 570))
POLY_1 = "".join(LOC(v) for v in (100, 200, 150, 210, 160, 300, 90, 290))
POLY_2 = "".join(LOC(v) for v in (600, 600, 700, 610, 650, 700))
EXAMPLES: list[tuple[str, str, tuple[int, int], dict[str, Any] | None]] = [
    # (tag, generated text, image (width, height), the result when written out by hand)
    ("<CAPTION>", "</s><s>A green car parked in front of a yellow building.</s>", (640, 480),
     {"<CAPTION>": "A green car parked in front of a yellow building."}),
    ("<OCR>", "</s><s>CUDA FOR ENGINEERS<pad></s>", (640, 480), {"<OCR>": "CUDA FOR ENGINEERS<pad>"}),
    ("<REGION_TO_CATEGORY>", f"</s><s>car{CAR}</s>", (640, 480), {"<REGION_TO_CATEGORY>": f"car{CAR}"}),
    ("<OD>", f"</s><s>car{CAR}door{DOOR}wheel{CAR}{DOOR}</s>", (640, 480),
     {"<OD>": {"bboxes": [[33, 160, 596, 371], [64, 9, 192, 288], [33, 160, 596, 371], [64, 9, 192, 288]],
               "labels": ["car", "door", "wheel", "wheel"]}}),
    ("<DENSE_REGION_CAPTION>", f"<s>turquoise Volkswagen Beetle{CAR}wooden door with metal handle{DOOR}</s>",
     (1280, 960), None),
    ("<REGION_PROPOSAL>", f"</s><s>{CAR}{DOOR}</s>", (640, 480),
     {"<REGION_PROPOSAL>": {"bboxes": [[33, 160, 596, 371], [64, 9, 192, 288]], "labels": ["", ""]}}),
    ("<CAPTION_TO_PHRASE_GROUNDING>", f"</s><s>A green car{CAR}a door{DOOR}{CAR}it{DOOR}</s>", (640, 480),
     {"<CAPTION_TO_PHRASE_GROUNDING>": {"bboxes": [[33, 160, 596, 371], [64, 9, 192, 288], [33, 160, 596, 371]],
                                        "labels": ["A green car", "a door", "a door"]}}),
    ("<OCR_WITH_REGION>", f"</s><s>CUDA{QUAD_1}FOR ENGINEERS{QUAD_2}</s>", (1000, 500),
     {"<OCR_WITH_REGION>": {"quad_boxes": [[10, 10, 110, 10, 110, 30, 10, 30],
                                           [500, 250, 900, 255, 895, 290, 498, 285]],
                            "labels": ["CUDA", "FOR ENGINEERS"]}}),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", f"</s><s>{POLY_1}</s>", (1000, 1000),
     {"<REFERRING_EXPRESSION_SEGMENTATION>": {"polygons": [[[100, 200, 150, 210, 160, 300, 90, 290]]],
                                              "labels": [""]}}),
    ("<REGION_TO_SEGMENTATION>", f"</s><s><poly>{POLY_1}<sep>{POLY_2}</poly></s>", (1000, 1000),
     {"<REGION_TO_SEGMENTATION>": {"polygons": [[[100, 200, 150, 210, 160, 300, 90, 290],
                                                 [600, 600, 700, 610, 650, 700]]], "labels": [""]}}),
    ("<OPEN_VOCABULARY_DETECTION>", f"</s><s>a green car{CAR}</s>", (640, 480),
     {"<OPEN_VOCABULARY_DETECTION>": {"bboxes": [[33, 160, 596, 371]], "bboxes_labels": ["a green car"],
                                      "polygons": [], "polygons_labels": []}}),
    ("<OPEN_VOCABULARY_DETECTION>", f"</s><s>a green car<poly>{POLY_1}</poly><poly>{POLY_2}</poly></s>", (1000, 1000),
     {"<OPEN_VOCABULARY_DETECTION>": {"bboxes": [], "bboxes_labels": [],
                                      "polygons": [[[100, 200, 150, 210, 160, 300, 90, 290]],
                                                   [[600, 600, 700, 610, 650, 700]]],
                                      "polygons_labels": ["a green car", "a green car"]}}),
    # Edge cases: loc 0 and 999 on a 1x1 image and on a 20000x10 strip; odd coordinate counts; trailing garbage.
    ("<OD>", "<s>dot<loc_0><loc_0><loc_999><loc_999></s>", (1, 1),
     {"<OD>": {"bboxes": [[0, 0, 0, 0]], "labels": ["dot"]}}),
    ("<OD>", "<s>strip<loc_0><loc_0><loc_999><loc_999></s>", (20000, 10),
     {"<OD>": {"bboxes": [[10, 0, 19990, 9]], "labels": ["strip"]}}),
    ("<REFERRING_EXPRESSION_SEGMENTATION>", "<s><loc_1><loc_2><loc_3><loc_4><loc_5></s>", (1000, 1000),
     {"<REFERRING_EXPRESSION_SEGMENTATION>": {"polygons": [[[1, 2, 3, 4]]], "labels": [""]}}),
    ("<OD>", f"<s>car{CAR}<loc_1><loc_2>door<loc_3></s>", (640, 480),
     {"<OD>": {"bboxes": [[33, 160, 596, 371]], "labels": ["car"]}}),
    ("<OCR_WITH_REGION>", f"<s>CUDA{QUAD_1[:-9]}", (1000, 500),
     {"<OCR_WITH_REGION>": {"quad_boxes": [], "labels": []}}),
    ("<OD>", "", (640, 480), {"<OD>": {"bboxes": [], "labels": []}}),
    ("<OD>", "<s>Café 東京<loc_1><loc_2><loc_3><loc_4></s>", (1000, 1000),
     {"<OD>": {"bboxes": [[1, 2, 3, 4]], "labels": ["Caf "]}}),
    # float32 arithmetic, as torch does it: (312 + 0.5) * float32(0.144) is 44.99999, which float64 makes 45.
    ("<OD>", "<s>a<loc_312><loc_312><loc_312><loc_312></s>", (144, 144),
     {"<OD>": {"bboxes": [[44, 44, 44, 44]], "labels": ["a"]}}),
]  # fmt: skip


@pytest.mark.parametrize(("tag", "text", "size", "by_hand"), EXAMPLES)
def test_documented_examples_equal_transformers(
    processor: Florence2Processor,
    oracle: Any,
    tag: str,
    text: str,
    size: tuple[int, int],
    by_hand: dict[str, Any] | None,
) -> None:
    ours = processor.post_process(text, tag, size)
    assert same(ours, expected(oracle, text, tag, size))
    if by_hand is not None:
        assert same(ours, by_hand)


def mismatches(processor: Florence2Processor, oracle: Any) -> int:
    return sum(
        not same(processor.post_process(text, tag, size), expected(oracle, text, tag, size))
        for tag, text, size, _ in EXAMPLES
    )


def test_comparison_catches_float64_coordinates(
    processor: Florence2Processor, oracle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: the same formula in float64 is off by one pixel on the regression example only."""

    def float64(bins: list[int], size: tuple[int, int]) -> list[int]:
        scale = np.tile([size[0] / 1000, size[1] / 1000], len(bins) // 2)
        return ((np.array(bins, dtype=np.float64) + 0.5) * scale).astype(np.int64).tolist()

    monkeypatch.setattr(postprocess_module, "dequantize", float64)
    assert mismatches(processor, oracle) == 1


def test_comparison_catches_floats_instead_of_ints(
    processor: Florence2Processor, oracle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: equal numbers as floats (a JSON difference) count as different."""
    real = postprocess_module.dequantize
    monkeypatch.setattr(postprocess_module, "dequantize", lambda bins, size: [float(v) for v in real(bins, size)])
    assert mismatches(processor, oracle) >= 10


def test_comparison_catches_unfiltered_phrases(
    processor: Florence2Processor, oracle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: keeping banned grounding phrases ("it") changes the grounding example."""
    monkeypatch.setattr(processor, "parse_config", type(processor.parse_config)())
    assert mismatches(processor, oracle) == 1


# --- generated token sequences ------------------------------------------------------------------------------------


class Vocab:
    def __init__(self, processor: Florence2Processor) -> None:
        tok = processor.tokenizer
        self.size = -(-tok._tokenizer.get_vocab_size(with_added_tokens=True) // 64) * 64  # the model's padded vocab
        self.loc = [tok.token_id(f"<loc_{i}>") for i in range(1000)]
        self.sep, self.poly, self.end_poly = (tok.token_id(t) for t in ("<sep>", "<poly>", "</poly>"))
        specials = ["<s>", "</s>", "<pad>", "<unk>", "<od>", "</od>", "<ocr>", "<cap>", "<and>", "<image>"]
        self.specials = [tok.token_id(t) for t in specials]
        words = [
            "car", " car", " door", "A green car", " a", "it", " the image", "Café", " 東京", "—", " ", ".", ",",
            "STOP", " 2024", "“quoted”", "<", "loc", "_", "12", ">", "<ground>", "<obj>", "<box>", "٣", "it ",
        ]  # fmt: skip
        self.words = sorted({i for w in words for i in tok.encode(w)})


def token_sequences(vocab: Vocab) -> st.SearchStrategy[list[int]]:
    loc = st.one_of(st.sampled_from([0, 999, 1, 998, 500]), st.integers(0, 999)).map(vocab.loc.__getitem__)
    word = st.sampled_from(vocab.words)
    label = st.lists(word, max_size=3)
    locs = st.lists(loc, min_size=1, max_size=11)
    polygon = st.tuples(label, locs, st.lists(st.tuples(st.just([vocab.sep]), locs), max_size=2)).map(
        lambda t: [*t[0], vocab.poly, *t[1], *(i for part in t[2] for i in part[0] + part[1]), vocab.end_poly]
    )
    chunk = st.one_of(
        word,
        loc,
        st.sampled_from([vocab.sep, vocab.poly, vocab.end_poly, *vocab.specials]),
        st.integers(0, vocab.size - 1),
        st.tuples(label, st.lists(loc, min_size=4, max_size=12)).map(lambda t: t[0] + t[1]),  # phrase and boxes
        st.tuples(label, st.lists(loc, min_size=8, max_size=8)).map(lambda t: t[0] + t[1]),  # OCR item
        polygon,
        locs,
    ).map(lambda c: c if isinstance(c, list) else [c])
    body = st.lists(chunk, max_size=10).map(lambda chunks: [i for c in chunks for i in c])
    framed = st.tuples(st.booleans(), body, st.booleans()).map(
        lambda t: ([2, 0] if t[0] else []) + t[1] + ([2] if t[2] else [])  # decoder start + BOS, EOS
    )
    return framed


image_sizes = st.one_of(
    st.sampled_from([(1, 1), (20000, 10), (10, 20000), (144, 144), (640, 480), (768, 768)]),
    st.tuples(st.integers(1, 5000), st.integers(1, 5000)),
)


@pytest.fixture(scope="module")
def vocab(processor: Florence2Processor) -> Vocab:
    return Vocab(processor)


@pytest.mark.slow  # 1200 sequences through both processors; the documented examples above stay fast
def test_generated_token_sequences_equal_transformers(
    processor: Florence2Processor, oracle: Any, vocab: Vocab, capsys: pytest.CaptureFixture[str]
) -> None:
    """1200 generated sequences; each decoded, then parsed in every answer format."""
    seen = {"examples": 0, "with_results": 0}

    @parity(1200)
    @given(ids=token_sequences(vocab), size=image_sizes)
    def check(ids: list[int], size: tuple[int, int]) -> None:
        text = processor.decode(ids)
        assert text == oracle.batch_decode([ids], skip_special_tokens=False)[0]
        seen["examples"] += 1
        for tag in REPRESENTATIVE_TAGS:
            ours = processor.post_process(text, tag, size)
            assert same(ours, expected(oracle, text, tag, size)), (tag, text, size)
            if not TASKS[tag].is_text and any(ours[tag].values()):
                seen["with_results"] += 1

    check()
    assert seen["examples"] >= 1000
    # The generator must exercise the parsers, not only produce empty results.
    assert seen["with_results"] >= 2000, seen


def test_decoding_equals_transformers_with_clean_up_spaces(
    checkpoint_variant: Callable[..., Path], vocab: Vocab
) -> None:
    """Checkpoints that set clean_up_tokenization_spaces get transformers' clean-up of ' .', \" n't\" ..."""
    from transformers import AutoTokenizer

    folder = checkpoint_variant({"tokenizer_config.json": lambda d: d.update(clean_up_tokenization_spaces=True)})
    ours = Florence2Processor.from_model_dir(folder)
    theirs = AutoTokenizer.from_pretrained(folder)
    probe = [*ours.tokenizer.encode("a car . is n't it 's ?"), 2]
    assert ours.decode(probe) == theirs.batch_decode([probe], skip_special_tokens=False)[0] == "a car. isn't it's?</s>"

    @parity(200)
    @given(ids=token_sequences(vocab))
    def check(ids: list[int]) -> None:
        assert ours.decode(ids) == theirs.batch_decode([ids], skip_special_tokens=False)[0]

    check()


# Text the model could only write by spelling tokens out of characters: odd digits, huge bins, stray markers.
text_fragments = st.one_of(
    st.sampled_from(["<s>", "</s>", "<pad>", "<sep>", "<poly>", "</poly>", "<od>", "</od>", "<box>", "<ground>",
                     "<obj>", "<", ">", " ", "  ", "car", "a door", "Café", "it", "the image", "\n", "<loc_"]),
    st.integers(0, 999).map("<loc_{}>".format),
    st.lists(st.integers(0, 999), min_size=4, max_size=8).map(lambda bins: "".join(map("<loc_{}>".format, bins))),
    st.integers(0, 10**25).map("<loc_{}>".format),
    st.sampled_from(["<loc_007>", "<loc_٣>", "<loc_３>", "<loc_>", "<loc_-1>", "<loc_1.5>"]),
    st.text(max_size=6),
)  # fmt: skip


def test_generated_texts_equal_transformers(processor: Florence2Processor, oracle: Any) -> None:
    """600 generated texts, each parsed in every answer format."""
    seen = {"examples": 0, "with_results": 0, "oracle_overflow": 0}

    @parity(600)
    @given(parts=st.lists(text_fragments, max_size=24), size=image_sizes)
    def check(parts: list[str], size: tuple[int, int]) -> None:
        text = "".join(parts)
        seen["examples"] += 1
        for tag in REPRESENTATIVE_TAGS:
            ours = processor.post_process(text, tag, size)
            if not TASKS[tag].is_text and any(ours[tag].values()):
                seen["with_results"] += 1
            try:
                theirs = expected(oracle, text, tag, size)
            except (OverflowError, RuntimeError, ValueError):
                # The documented difference: bins past int64 overflow torch.tensor; we give the overflow value.
                assert any(int(b) >= 2**63 for b in _loc_values(text))
                seen["oracle_overflow"] += 1
                continue
            assert same(ours, theirs), (tag, text, size)

    check()
    assert seen["examples"] >= 600 and seen["with_results"] >= 1200 and seen["oracle_overflow"] >= 1, seen


def _loc_values(text: str) -> list[str]:
    return re.findall(r"<loc_(\d+)>", text)


def test_huge_bins_give_the_overflow_value(processor: Florence2Processor, oracle: Any) -> None:
    text = "<s>far<loc_3000000000><loc_1><loc_2><loc_3></s>"
    ours = processor.post_process(text, "<OD>", (1000, 1000))
    assert same(ours, expected(oracle, text, "<OD>", (1000, 1000)))
    assert ours["<OD>"]["bboxes"] == [[INT32_MIN, 1, 2, 3]]
    beyond_int64 = "<s>far<loc_99999999999999999999999><loc_1><loc_2><loc_3></s>"
    assert processor.post_process(beyond_int64, "<OD>", (1000, 1000))["<OD>"]["bboxes"] == [[INT32_MIN, 1, 2, 3]]
    with pytest.raises((OverflowError, RuntimeError, ValueError)):
        expected(oracle, beyond_int64, "<OD>", (1000, 1000))


def test_area_threshold_filters_small_quads(checkpoint_variant: Callable[..., Path], tiny_checkpoint: Path) -> None:
    """A checkpoint's OCR AREA_THRESHOLD drops small quads, with upstream's (open) shoelace sum."""
    from transformers import AutoProcessor

    def threshold(data: dict[str, Any]) -> None:
        data["post_processor_config"]["ocr"]["AREA_THRESHOLD"] = 0.01

    folder = checkpoint_variant({"processor_config.json": threshold})
    ours, theirs = Florence2Processor.from_model_dir(folder), AutoProcessor.from_pretrained(folder)
    text = f"<s>CUDA{QUAD_1}FOR ENGINEERS{QUAD_2}</s>"
    result = ours.post_process(text, "<OCR_WITH_REGION>", (1000, 500))
    assert same(result, expected(theirs, text, "<OCR_WITH_REGION>", (1000, 500)))
    assert result["<OCR_WITH_REGION>"]["labels"] == ["FOR ENGINEERS"]


# --- the linear-time scanners ----------------------------------------------------------------------------------------

scanner_text = st.lists(
    st.one_of(
        st.sampled_from(["<", ">", "\n", " ", "a", "<sep>", "<poly>", "</poly>", "<loc_", "<od>", "٣", "x\ny"]),
        st.integers(0, 12).map("<loc_{}>".format),
        st.lists(st.integers(0, 999), min_size=3, max_size=9).map(lambda bins: "".join(map("<loc_{}>".format, bins))),
        st.text(alphabet="<>/_locsepy0123\n ", max_size=5),
    ),
    max_size=40,
).map("".join)


@parity(1500)
@given(text=scanner_text)
def test_scanners_return_what_the_upstream_patterns_return(text: str) -> None:
    assert postprocess_module.find_ocr_items(text) == re.findall(DEFAULT_OCR_PATTERN, text)
    for tokens in (r"(?:<loc_\d+>){4,}", r"(?:<loc_\d+>|<sep>|<poly>|</poly>){4,}"):
        assert postprocess_module.find_phrase_runs(text, re.compile(tokens)) == re.findall(f"([^<]+{tokens})", text)


def test_unparsable_long_text_is_parsed_in_linear_time(processor: Florence2Processor) -> None:
    """A thousand tokens of text that never completes a box: upstream's patterns take ~0.5 s per call on it."""
    words = ["a", "car", "door", "green", "the", "of", "building", "parked", "in", "front", "yellow"]
    texts = [
        " ".join(words[i % len(words)] for i in range(1000)),
        "".join(f"{words[i % len(words)]}<loc_{i % 1000}><loc_1><loc_2><loc_3>" for i in range(250)),
    ]
    start = time.perf_counter()
    for text in texts:
        for tag in REPRESENTATIVE_TAGS:
            processor.post_process(text, tag, (640, 480))
    assert time.perf_counter() - start < 0.1
