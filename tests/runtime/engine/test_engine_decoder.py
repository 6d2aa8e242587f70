"""The decoder's KV cache layouts: one cross-attention cache per request (our exporter) or per row (elsewhere).

Requests with different beam counts share one batch (the narrower ones padded), and leave it at different steps;
every layout must give the tokens each request gets alone.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from engine_cases import noise_image, run_direct
from wrapped_runner import WrappedRunner

from runtime.engine import EngineSettings, TaskRequest, load
from runtime.engine.decoder import OrtDecoder
from runtime.engine.model import Florence2Engine
from runtime.engine.sessions import GraphRunner, open_sessions
from runtime.model_folder import CROSS_CACHE_KEY, DECODER, EMBED_TOKENS, PER_REQUEST

SELF_KEY, CROSS_KEY = "past_key_values.0.decoder.key", "past_key_values.0.encoder.key"


def mixed_requests() -> list[TaskRequest]:
    """Greedy next to beam 3 and beam 2, with different lengths so that requests leave at different steps."""
    return [
        TaskRequest(image=noise_image((80, 60), 1), task="<CAPTION>", max_new_tokens=4, num_beams=1),
        TaskRequest(image=noise_image((60, 80), 2), task="<OD>", max_new_tokens=12, num_beams=3),
        TaskRequest(image=noise_image((70, 70), 3), task="<OCR>", max_new_tokens=8, num_beams=2),
    ]


class DecoderFeeds(WrappedRunner):
    """The real sessions, recording the rows of the KV cache fed to each cached decoder step; ``corrupt``
    may change a step's feeds (the negative control)."""

    def __init__(self, inner: GraphRunner, corrupt: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(inner)
        self.corrupt = corrupt
        self.steps: list[tuple[int, int, int]] = []  # (inputs_embeds rows, self KV rows, cross KV rows)

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if graph == DECODER and feeds["use_cache_branch"][0]:
            feeds = dict(feeds)
            if self.corrupt is not None:
                self.corrupt(feeds)
            rows = (len(feeds["inputs_embeds"]), len(feeds[SELF_KEY]), len(feeds[CROSS_KEY]))
            self.steps.append(rows)
        return self.inner.run(graph, feeds, outputs)


@pytest.fixture(scope="module")
def alone(engine: Florence2Engine) -> list[list[int]]:
    return [run_direct(engine, [r])[0].token_ids for r in mixed_requests()]


def run_batch(folder: Path, runner: DecoderFeeds) -> list[list[int]]:
    batched = load(folder, EngineSettings(max_batch_size=8, batch_wait_ms=50, warmup=False), runner=runner)
    try:
        return [r.token_ids for r in run_direct(batched, mixed_requests())]
    finally:
        asyncio.run(batched.close())


@pytest.fixture(scope="module")
def per_row_folder(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny folder with a decoder that does not declare the per-request layout, as one exported elsewhere."""
    folder = tmp_path_factory.mktemp("per-row")
    for item in tiny_model_dir.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "onnx").unlink()
    (folder / "onnx").mkdir()
    for item in (tiny_model_dir / "onnx").iterdir():
        (folder / "onnx" / item.name).symlink_to(item)
    decoder = folder / "onnx" / "decoder_model_merged.onnx"
    model = onnx.load(str(decoder.resolve()))
    del model.metadata_props[:]
    decoder.unlink()
    onnx.save_model(model, str(decoder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_exported_decoder_keeps_one_cross_cache_per_request(
    tiny_model_dir: Path, engine: Florence2Engine, alone: list[list[int]]
) -> None:
    assert engine.runner.metadata(DECODER)[CROSS_CACHE_KEY] == PER_REQUEST
    runner = DecoderFeeds(open_sessions(tiny_model_dir, EngineSettings()))
    assert run_batch(tiny_model_dir, runner) == alone
    # 3 requests at 3 rows each (greedy and beam 2 padded), one cache row per request; then the greedy one leaves.
    assert runner.steps[0] == (9, 9, 3)
    assert (6, 6, 2) in runner.steps
    assert all(embeds == self_kv == cross * (self_kv // cross) for embeds, self_kv, cross in runner.steps)


def test_a_per_row_decoder_gets_the_same_tokens(per_row_folder: Path, alone: list[list[int]]) -> None:
    runner = DecoderFeeds(open_sessions(per_row_folder, EngineSettings()))
    assert CROSS_CACHE_KEY not in runner.metadata(DECODER)
    assert run_batch(per_row_folder, runner) == alone
    # No padding: 1 + 3 + 2 rows, each with its own cross-attention cache row.
    assert runner.steps[0] == (6, 6, 6)
    assert all(embeds == self_kv == cross for embeds, self_kv, cross in runner.steps)


def test_batch_check_fails_when_requests_read_each_others_cross_cache(
    tiny_model_dir: Path, alone: list[list[int]]
) -> None:
    def swap_requests(feeds: dict[str, Any]) -> None:
        for name in [n for n in feeds if ".encoder." in n and n.startswith("past_key_values.")]:
            feeds[name] = np.roll(feeds[name], 1, axis=0)

    runner = DecoderFeeds(open_sessions(tiny_model_dir, EngineSettings()), corrupt=swap_requests)
    assert run_batch(tiny_model_dir, runner) != alone


def test_beam_reorders_move_rows_in_place(engine: Florence2Engine) -> None:
    """A permutation with a cycle and a duplicated row, on the decoder's own cache arrays (which ONNX Runtime
    returns writable): the result equals a fresh gather, in the same buffer."""
    decoder = OrtDecoder(engine.runner, np.zeros((1, 4, 8), np.float32), np.ones((1, 4), np.int64))
    cache = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    for rows in (np.array([1, 2, 0, 3, 3]), np.array([0, 1, 2, 4, 4]), np.arange(5)):
        expected = cache[rows]
        reordered = decoder._reorder(cache, rows)
        assert reordered is cache
        np.testing.assert_array_equal(reordered, expected)
    fewer = decoder._reorder(cache, np.array([4, 0]))  # requests left: a smaller, new array
    np.testing.assert_array_equal(fewer, cache[[4, 0]])
    outputs = engine.runner.run(EMBED_TOKENS, {"input_ids": np.array([[2]])})
    assert outputs[0].flags.writeable
