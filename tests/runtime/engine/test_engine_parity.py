"""Token parity with transformers' ``generate`` for every task tag, greedy and beam 3, alone and in a padded batch.

The checkpoint's generation_config drives both sides: num_beams 3, no_repeat_ngram_size 3, forced BOS and EOS,
early stopping. The batch mixes image sizes and prompt lengths, so prompts are padded and masks matter.
Negative controls show that the same check fails when the KV history is dropped, the attention mask is
ignored, or the image features are scaled.

Every test runs on each backend (ONNX Runtime, and OpenVINO at f32 when it is installed): the decoder, KV cache,
batching and search are shared, only the graph runner differs, and it must give the same tokens, near ties aside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_cases import MAX_NEW_TOKENS, loaded, request, run_direct
from engine_oracle import TIE_TOLERANCE, Case, Oracle, Reference, parity_failures
from wrapped_runner import WrappedRunner

from runtime.engine.decoder import OrtDecoder
from runtime.engine.encoding import encode_prompts, image_features
from runtime.engine.model import Florence2Engine
from runtime.engine.pipeline import Pipeline
from runtime.engine.sessions import DECODER, ENCODER, VISION_ENCODER, GraphRunner
from runtime.florence2 import TASKS

BEAMS = (1, pytest.param(3, marks=pytest.mark.slow))  # greedy stays in `make test-fast`; beam 3 is minutes
BACKENDS = ("onnxruntime", "openvino")
_memo: dict[tuple[str, str, int], Any] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[Florence2Engine]:
    """The tiny model's engine on each backend (the oracle, built from it, follows)."""
    if request.param == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install -e .[openvino])")
    with loaded(tiny_model_dir, request.param) as engine:
        assert engine.runner.backend == request.param
        yield engine


def memo(runner: Any, key: tuple[str, int], compute: Callable[[], Any]) -> Any:
    """Results and references per backend (the oracle's vision features come from the engine's graph)."""
    full = (runner.backend, *key)
    if full not in _memo:
        _memo[full] = compute()
    return _memo[full]


@pytest.fixture(scope="module", autouse=True)
def _forget() -> Any:
    yield
    _memo.clear()


def labels(cases: Sequence[Case], what: str) -> list[str]:
    return [f"{what} {case.task}" for case in cases]


def solo_references(oracle: Oracle, cases: Sequence[Case], beams: int) -> list[Reference]:
    return memo(
        oracle.vision,
        ("solo-ref", beams),
        lambda: [oracle.generate([c], num_beams=beams, max_new_tokens=MAX_NEW_TOKENS)[0] for c in cases],
    )


def batch_references(oracle: Oracle, cases: Sequence[Case], beams: int) -> list[Reference]:
    return memo(
        oracle.vision,
        ("batch-ref", beams),
        lambda: oracle.generate(cases, num_beams=beams, max_new_tokens=MAX_NEW_TOKENS),
    )


def solo_results(engine: Florence2Engine, cases: Sequence[Case], beams: int) -> list[Any]:
    return memo(engine.runner, ("solo", beams), lambda: [run_direct(engine, [request(c, beams)])[0] for c in cases])


def batch_results(engine: Florence2Engine, cases: Sequence[Case], beams: int) -> list[Any]:
    return memo(engine.runner, ("batch", beams), lambda: run_direct(engine, [request(c, beams) for c in cases]))


def test_cases_cover_every_task_and_padding(oracle: Oracle, cases: list[Case]) -> None:
    from runtime.florence2 import TASKS

    assert sorted(c.task for c in cases) == sorted(TASKS)
    assert len({c.image.size for c in cases}) > 1
    mask = oracle.inputs(cases)["attention_mask"].numpy()
    assert len(set(mask.sum(axis=1).tolist())) > 3, "prompt lengths must differ so that the batch is padded"


def test_vision_graph_is_close_to_torch(oracle: Oracle, engine: Florence2Engine, cases: list[Case]) -> None:
    import torch

    pixels = oracle.inputs(cases[:3])["pixel_values"]
    with torch.no_grad():
        expected = oracle.model.get_image_features(pixels).numpy()
    (got,) = engine.runner.run(VISION_ENCODER, {"pixel_values": pixels.numpy()})
    worst = float(np.abs(got - expected).max())
    print(f"vision graph vs torch: max abs diff {worst:.2e} (features up to {np.abs(expected).max():.2f})")
    assert worst < 5e-3


@pytest.mark.slow
def test_teacher_forced_logits_are_close(oracle: Oracle, engine: Florence2Engine, cases: list[Case]) -> None:
    """The reference tokens fed through the engine's graphs give transformers' logits, step by step."""
    worst = 0.0
    for case, reference in zip(cases, solo_references(oracle, cases, 1), strict=True):
        job = engine.prepare(request(case, 1))
        features = image_features(engine.runner, engine.processor.preprocess([case.image]))
        encoded = encode_prompts(engine.runner, features, [job.prompt_ids], engine.processor.pad_id)
        decoder = OrtDecoder(engine.runner, encoded.hidden_states, encoded.attention_mask)
        logits = decoder.start(np.array([engine.config.decoder_start_token_id]))
        for step, expected in enumerate(reference.logits):
            worst = max(worst, float(np.abs(logits[0] - expected).max()))
            if step + 1 < len(reference.tokens):
                logits = decoder.step(np.array([reference.tokens[step]]))
    print(f"teacher-forced logits vs transformers: max abs diff {worst:.2e}")
    assert worst < TIE_TOLERANCE


@pytest.mark.parametrize("beams", BEAMS)
def test_alone_matches_transformers(oracle: Oracle, engine: Florence2Engine, cases: list[Case], beams: int) -> None:
    references = solo_references(oracle, cases, beams)
    results = solo_results(engine, cases, beams)
    # each divergence must sit at a reference decision closer than fp32 rounding (printed); how many do is the
    # CPU's rounding, not a property of the engine, so it is not bounded
    failures, _ = parity_failures(references, [r.token_ids for r in results], labels(cases, f"alone beams={beams}"))
    assert not failures, "\n".join(failures)
    assert len({tuple(r.token_ids) for r in results}) > len(cases) // 2, "outputs must vary with image and prompt"


@pytest.mark.parametrize("beams", BEAMS)
def test_padded_batch_matches_transformers(
    oracle: Oracle, engine: Florence2Engine, cases: list[Case], beams: int
) -> None:
    references = batch_references(oracle, cases, beams)
    results = batch_results(engine, cases, beams)
    assert all(r.batch_size == len(cases) for r in results)
    failures, _ = parity_failures(references, [r.token_ids for r in results], labels(cases, f"batch beams={beams}"))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("beams", BEAMS)
def test_batch_results_equal_alone_results(
    oracle: Oracle, engine: Florence2Engine, cases: list[Case], beams: int
) -> None:
    references = solo_references(oracle, cases, beams)
    alone = solo_results(engine, cases, beams)
    batched = batch_results(engine, cases, beams)
    for a, b in zip(alone, batched, strict=True):
        assert a.prompt_tokens == b.prompt_tokens
    # Batching changes only the shapes ONNX Runtime sees; ties closer than fp32 rounding may still go either way.
    failures, _ = parity_failures(
        [
            Reference(list(a.token_ids), a.text, ref.margins, ref.num_beams)
            for a, ref in zip(alone, references, strict=True)
        ],
        [b.token_ids for b in batched],
        labels(cases, f"batch vs alone beams={beams}"),
    )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("beams", BEAMS)
def test_parsed_results_equal_transformers_post_processing(
    oracle: Oracle, engine: Florence2Engine, cases: list[Case], beams: int
) -> None:
    for case, result in zip(cases, batch_results(engine, cases, beams), strict=True):
        start = oracle.config.decoder_start_token_id
        # Pure-text answers are the clean text: transformers' decoding with skip_special_tokens=True.
        clean = TASKS[case.task].is_text
        text = oracle.processor.batch_decode([[start, *result.token_ids]], skip_special_tokens=clean)[0]
        assert result.parsed == oracle.post_process(text, case.task, case.image.size), case.task
        assert result.completion_tokens == len(result.token_ids) <= MAX_NEW_TOKENS


# Negative controls: a wrapped runner breaks one thing; the same parity check must then fail.


class Perturbed(WrappedRunner):
    """Delegates to the real sessions, changing the inputs or outputs of one graph."""

    def __init__(
        self,
        inner: GraphRunner,
        graph: str,
        inputs: Callable[[dict[str, Any]], dict[str, Any]] = lambda feeds: feeds,
        outputs: Callable[[list[np.ndarray]], list[np.ndarray]] = lambda values: values,
    ) -> None:
        super().__init__(inner)
        self.graph, self.change_inputs, self.change_outputs = graph, inputs, outputs

    def run(self, graph: str, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        if graph != self.graph:
            return self.inner.run(graph, feeds, outputs)
        return self.change_outputs(self.inner.run(graph, self.change_inputs(dict(feeds)), outputs))


def drop_kv_history(feeds: dict[str, Any]) -> dict[str, Any]:
    if feeds["use_cache_branch"][0]:
        for name in feeds:
            if name.startswith("past_key_values.") and ".decoder." in name:
                feeds[name] = feeds[name][:, :, -1:, :]
    return feeds


def ignore_mask(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(feeds: dict[str, Any]) -> dict[str, Any]:
        feeds[name] = np.ones_like(feeds[name])
        return feeds

    return change


CONTROLS = {
    "dropped KV history": lambda runner: Perturbed(runner, DECODER, inputs=drop_kv_history),
    "encoder ignores the attention mask": lambda runner: Perturbed(
        runner, ENCODER, inputs=ignore_mask("attention_mask")
    ),
    "decoder ignores the attention mask": lambda runner: Perturbed(
        runner, DECODER, inputs=ignore_mask("encoder_attention_mask")
    ),
    "image features scaled by 1.01": lambda runner: Perturbed(
        runner, VISION_ENCODER, outputs=lambda values: [values[0] * np.float32(1.01)]
    ),
}


@pytest.mark.parametrize(
    "control", [c if c == "dropped KV history" else pytest.param(c, marks=pytest.mark.slow) for c in sorted(CONTROLS)]
)
def test_parity_check_fails_when_the_engine_is_broken(
    oracle: Oracle, engine: Florence2Engine, cases: list[Case], control: str
) -> None:
    broken = Pipeline(CONTROLS[control](engine.runner), engine.processor, engine.config)
    outcomes = broken.run([engine.prepare(request(c, 1)) for c in cases])
    references = batch_references(oracle, cases, 1)
    failures, _ = parity_failures(references, [o.token_ids for o in outcomes], labels(cases, control))
    print(f"{control}: {len(failures)} of {len(cases)} cases fail parity (tie tolerance {TIE_TOLERANCE})")
    assert len(failures) >= 3
