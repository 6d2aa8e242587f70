"""The engine behind its async API: batching of concurrent runs, failure isolation, streaming, limits, info."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_cases import noise_image, run_direct
from waiting import wait_until_async
from wrapped_runner import WrappedRunner

from runtime.engine import EngineSettings, TaskRequest, TaskResult, load
from runtime.engine.model import Florence2Engine
from runtime.engine.sessions import DECODER, VISION_ENCODER, GraphRunner, open_sessions
from runtime.errors import InferenceFailed, InvalidImage, InvalidRequest, InvalidTaskInput, StreamNotSupported

TOKENS = 12


def caption(seed: int, beams: int = 1, tokens: int = TOKENS, task: str = "<CAPTION>") -> TaskRequest:
    return TaskRequest(
        image=noise_image((120 + 40 * seed, 90 + 10 * seed), seed), task=task, max_new_tokens=tokens, num_beams=beams
    )


class Exploding(WrappedRunner):
    """The real sessions, except that the decoder raises on its third call while ``armed``."""

    def __init__(self, inner: GraphRunner) -> None:
        super().__init__(inner)
        self.armed, self.decoder_calls = False, 0

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if graph == DECODER and self.armed:
            self.decoder_calls += 1
            if self.decoder_calls == 3:
                self.armed = False
                raise InferenceFailed("decoder_model_merged failed: simulated device error")
        return self.inner.run(graph, feeds, outputs)


@pytest.fixture(scope="module")
def batching_engine(tiny_model_dir: Path) -> Any:
    runner = Exploding(open_sessions(tiny_model_dir, EngineSettings()))
    engine = load(tiny_model_dir, EngineSettings(max_batch_size=4, batch_wait_ms=300), runner=runner)
    yield engine
    asyncio.run(engine.close())


async def test_concurrent_runs_are_batched_and_equal_alone_runs(batching_engine: Florence2Engine) -> None:
    requests = [caption(1), caption(2, beams=3), caption(3, beams=2, tokens=7), caption(4, task="<OD>")]
    alone = [run_direct(batching_engine, [r])[0] for r in requests]
    results = await asyncio.gather(*(batching_engine.run(r) for r in requests))
    assert [r.batch_size for r in results] == [4, 4, 4, 4]
    assert list(batching_engine.recent_batch_sizes)[-1] == 4
    for a, b in zip(alone, results, strict=True):
        assert (b.token_ids, b.finish_reason, b.parsed) == (a.token_ids, a.finish_reason, a.parsed)
    assert set(results[0].timings) >= {"vision", "encoder", "first_decode", "decode_per_token", "queue"}


async def test_more_requests_than_a_batch_holds_are_split(batching_engine: Florence2Engine) -> None:
    results = await batching_engine.run_batch([caption(i, tokens=3) for i in range(6)])
    assert [r.batch_size for r in results] == [4, 4, 4, 4, 2, 2]


async def test_a_session_error_fails_only_its_batch(batching_engine: Florence2Engine) -> None:
    runner = batching_engine.runner
    assert isinstance(runner, Exploding)
    runner.armed, runner.decoder_calls = True, 0
    failed = await asyncio.gather(*(batching_engine.run(caption(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(e, InferenceFailed) for e in failed), failed
    assert "simulated device error" in str(failed[0])
    again = await asyncio.gather(*(batching_engine.run(caption(i)) for i in range(3)))
    assert all(isinstance(r, TaskResult) for r in again)


async def test_max_new_tokens_stops_with_length(engine: Florence2Engine) -> None:
    for beams in (1, 3):
        result = await engine.run(caption(5, beams=beams, tokens=6))
        assert result.finish_reason == "length"
        assert result.completion_tokens == len(result.token_ids) == 6
        assert result.token_ids[0] == engine.config.forced_bos_token_id
        assert result.token_ids[-1] in engine.config.forced_eos_token_ids  # forced at the limit, as transformers


async def test_ignore_eos_always_generates_max_new_tokens(engine: Florence2Engine) -> None:
    request = TaskRequest(image=noise_image((64, 64), 9), task="<OCR>", max_new_tokens=20, ignore_eos=True)
    result = await engine.run(request)
    assert result.completion_tokens == 20 and result.finish_reason == "length"


@pytest.mark.parametrize("beams", [1, 3])
async def test_stream_deltas_add_up_to_the_answer(engine: Florence2Engine, beams: int) -> None:
    request = caption(6, beams=beams, tokens=20)
    items = [item async for item in engine.stream(request)]
    *deltas, result = items
    assert isinstance(result, TaskResult)
    assert all(isinstance(d, str) and d for d in deltas)
    assert len(deltas) > 2
    assert "".join(deltas) == result.parsed["<CAPTION>"]
    assert result.token_ids == (await engine.run(request)).token_ids


async def test_stream_refuses_structured_tasks(engine: Florence2Engine) -> None:
    with pytest.raises(StreamNotSupported):
        async for _ in engine.stream(caption(1, task="<OD>")):
            pass


async def test_a_stream_left_early_does_not_disturb_the_engine(engine: Florence2Engine) -> None:
    stream = engine.stream(caption(7, tokens=40))
    async for _ in stream:
        break
    await stream.aclose()
    result = await engine.run(caption(7, tokens=5))
    assert result.completion_tokens == 5


def test_validate_rejects_bad_requests(engine: Florence2Engine) -> None:
    image = noise_image((32, 32), 0)
    with pytest.raises(InvalidTaskInput):
        engine.validate(TaskRequest(image=image, task="<NOPE>"))
    with pytest.raises(InvalidTaskInput):
        engine.validate(TaskRequest(image=image, task="<REGION_TO_CATEGORY>"))
    with pytest.raises(InvalidRequest) as beams:
        engine.validate(TaskRequest(image=image, task="<OD>", num_beams=engine.settings.max_beams + 1))
    assert beams.value.param == "num_beams"
    with pytest.raises(InvalidRequest) as tokens:
        engine.validate(TaskRequest(image=image, task="<OD>", max_new_tokens=0))
    assert tokens.value.param == "max_new_tokens"
    with pytest.raises(InvalidImage):
        engine.validate(TaskRequest(image="not an image", task="<OD>"))  # type: ignore[arg-type]
    engine.validate(TaskRequest(image=image, task="<OPEN_VOCABULARY_DETECTION>", text_input="a cat"))
    assert engine.is_text_task("<CAPTION>") and not engine.is_text_task("<OD>") and not engine.is_text_task("x")


async def test_defaults_come_from_the_generation_config(engine: Florence2Engine) -> None:
    job = engine.prepare(TaskRequest(image=noise_image((32, 32), 0), task="<OD>"))
    assert job.options.num_beams == engine.config.num_beams == 3
    assert job.options.max_new_tokens == min(engine.config.default_max_new_tokens, engine.settings.max_new_tokens)


def test_info_says_the_weights_are_random(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="runtime.engine.model"):
        engine = load(tiny_model_dir, EngineSettings(warmup=False))
    asyncio.run(engine.close())
    assert engine.info.random_weights
    assert engine.info.name == tiny_model_dir.name and engine.info.providers == ("CPUExecutionProvider",)
    assert any("RANDOM WEIGHTS" in r.getMessage() for r in caplog.records)


class CountingVision(WrappedRunner):
    """The real sessions, recording how many images each vision-encoder run receives."""

    def __init__(self, inner: GraphRunner) -> None:
        super().__init__(inner)
        self.vision_batches: list[int] = []

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if graph == VISION_ENCODER:
            self.vision_batches.append(len(feeds["pixel_values"]))
        return self.inner.run(graph, feeds, outputs)


@pytest.mark.parametrize(("setting", "expected"), [(0, [1, 1, 1]), (2, [2, 1]), (8, [3])])
def test_vision_batch_size_bounds_images_per_vision_run(
    tiny_model_dir: Path, engine: Florence2Engine, setting: int, expected: list[int]
) -> None:
    runner = CountingVision(engine.runner)
    settings = EngineSettings(vision_batch_size=setting, warmup=False)
    chunked = load(tiny_model_dir, settings, runner=runner)
    try:
        requests = [caption(1), caption(2, task="<OD>"), caption(3, beams=2)]
        results = run_direct(chunked, requests)
        assert runner.vision_batches == expected  # 0 on a CPU: one image per run
        alone = [run_direct(engine, [r])[0] for r in requests]
        assert [r.token_ids for r in results] == [a.token_ids for a in alone]
    finally:
        asyncio.run(chunked.close())


class GatedVision(WrappedRunner):
    """The real sessions; the first vision-encoder run waits until the test opens the gate."""

    def __init__(self, inner: GraphRunner) -> None:
        super().__init__(inner)
        self.entered, self.gate = threading.Event(), threading.Event()

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if graph == VISION_ENCODER and not self.gate.is_set():
            self.entered.set()
            self.gate.wait(10)
        return self.inner.run(graph, feeds, outputs)


@pytest.mark.parametrize(("admit", "sizes"), [(True, [3, 3, 3]), (False, [1, 2, 2])])
async def test_requests_arriving_while_a_batch_encodes_join_it(
    tiny_model_dir: Path, engine: Florence2Engine, admit: bool, sizes: list[int]
) -> None:
    runner = GatedVision(engine.runner)
    settings = EngineSettings(max_batch_size=4, batch_wait_ms=1, admit_while_encoding=admit, warmup=False)
    gated = load(tiny_model_dir, settings, runner=runner)
    try:
        requests = [caption(1), caption(2, beams=3, task="<OD>"), caption(3, tokens=5)]
        first = asyncio.ensure_future(gated.run(requests[0]))
        await asyncio.to_thread(runner.entered.wait, 10)  # the first batch, alone, is encoding its image
        later = [asyncio.ensure_future(gated.run(r)) for r in requests[1:]]
        await wait_until_async(lambda: gated._batcher._queue.qsize() == 2, "both later requests to be queued")
        runner.gate.set()
        results = await asyncio.gather(first, *later)
        assert [r.batch_size for r in results] == sizes
        alone = [run_direct(engine, [r])[0] for r in requests]
        for a, b in zip(alone, results, strict=True):
            assert (b.token_ids, b.finish_reason, b.parsed) == (a.token_ids, a.finish_reason, a.parsed)
        assert all(r.timings["queue"] >= 0 for r in results)
    finally:
        await gated.close()


class HeldDecoder(WrappedRunner):
    """The real sessions; the decoder's ``hold_at``-th run waits until the test releases it."""

    def __init__(self, inner: GraphRunner, hold_at: int) -> None:
        super().__init__(inner)
        self.hold_at, self.decoder_runs = hold_at, 0
        self.release = threading.Event()

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if graph == DECODER:
            self.decoder_runs += 1
            if self.decoder_runs == self.hold_at:
                self.release.wait(120)  # a bound for a broken run only: the test releases it
        return self.inner.run(graph, feeds, outputs)


async def test_a_short_request_is_answered_when_it_leaves_the_batch(
    tiny_model_dir: Path, engine: Florence2Engine
) -> None:
    """Its answer does not wait for the longest request of its batch (held mid-decode here until the short answer
    arrives); both equal their solo runs."""
    short = TaskRequest(image=noise_image((90, 70), 1), task="<CAPTION>", max_new_tokens=3, ignore_eos=True)
    long = TaskRequest(image=noise_image((70, 90), 2), task="<OD>", max_new_tokens=30, num_beams=2, ignore_eos=True)
    alone = [run_direct(engine, [r])[0].token_ids for r in (short, long)]
    runner = HeldDecoder(engine.runner, hold_at=10)
    batched = load(tiny_model_dir, EngineSettings(max_batch_size=4, batch_wait_ms=200, warmup=False), runner=runner)
    try:
        first, second = asyncio.ensure_future(batched.run(short)), asyncio.ensure_future(batched.run(long))
        # Without early answers this waits for the held decoder, which only the test releases (after this).
        quick = await asyncio.wait_for(first, 60)
        assert runner.decoder_runs <= 10 and not second.done()
        runner.release.set()
        slow = await asyncio.wait_for(second, 60)
        assert quick.batch_size == slow.batch_size == 2
        assert [quick.token_ids, slow.token_ids] == alone
        assert runner.decoder_runs == 30
        assert quick.timings["decode"] < slow.timings["decode"]
    finally:
        runner.release.set()
        await batched.close()
