"""RemoteEngine over a fake ModelHandle: the retry-once rule, 503 when no replica is left, the replica header,
and requests checked with the model's rules before anything is sent. No Ray needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from runtime.cluster.remote_engine import ModelFacts, NoReplica, RemoteEngine, ReplicaLost, ReplicaName
from runtime.engine.api import ModelInfo, TaskRequest, TaskResult
from runtime.engine.generation_config import GenerationConfig
from runtime.engine.task_rules import TaskRules
from runtime.errors import InvalidRequest, InvalidTaskInput, Unavailable
from runtime.florence2 import Florence2Processor
from runtime.server.model_replica import HEADER, ModelReplicaMiddleware

RETRY_AFTER_S = 3.0
RESULT = TaskResult(
    task="<CAPTION>",
    text="</s><s>a cat</s>",
    parsed={"<CAPTION>": "a cat"},
    token_ids=(2, 0, 10, 2),
    prompt_tokens=5,
    completion_tokens=4,
    finish_reason="stop",
)
Outcome = tuple[str, TaskResult] | Exception


class ScriptedHandle:
    """Answers each call with the next scripted outcome: a (replica, result) pair, or an error to raise."""

    def __init__(self, *outcomes: Outcome, deltas: tuple[str, ...] = ("a ", "cat")) -> None:
        self.outcomes = list(outcomes)
        self.deltas = deltas
        self.calls = 0

    async def run(self, request: TaskRequest) -> tuple[str, TaskResult]:
        outcome = self._next()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def stream(self, request: TaskRequest) -> AsyncIterator[ReplicaName | str | TaskResult]:
        outcome = self._next()
        if isinstance(outcome, NoReplica):
            raise outcome
        if isinstance(outcome, ReplicaLost) and outcome.args == ("before",):
            raise outcome
        name = "replica-x" if isinstance(outcome, Exception) else outcome[0]
        yield ReplicaName(name)
        for delta in self.deltas:
            yield delta
        if isinstance(outcome, Exception):
            raise outcome  # died after sending text
        yield outcome[1]

    def _next(self) -> Outcome:
        self.calls += 1
        return self.outcomes.pop(0)


@pytest.fixture(scope="module")
def facts(tiny_model_dir: Path) -> ModelFacts:
    processor = Florence2Processor.from_model_dir(tiny_model_dir)
    rules = TaskRules(processor, GenerationConfig.from_model_dir(tiny_model_dir), max_new_tokens=32, max_beams=3)
    info = ModelInfo(name="tiny", path=str(tiny_model_dir), random_weights=True, variant="fp32", providers=("CPU",))
    return ModelFacts(info, rules)


def request(task: str = "<CAPTION>", **options: object) -> TaskRequest:
    return TaskRequest(image=Image.new("RGB", (32, 24)), task=task, **options)  # type: ignore[arg-type]


def engine(handle: ScriptedHandle, facts: ModelFacts) -> RemoteEngine:
    return RemoteEngine(handle, facts, retry_after_s=RETRY_AFTER_S)


async def test_answers_from_the_replica(facts: ModelFacts) -> None:
    handle = ScriptedHandle(("replica-a", RESULT))
    assert await engine(handle, facts).run(request()) == RESULT
    assert handle.calls == 1


async def test_a_lost_replica_is_retried_once(facts: ModelFacts) -> None:
    handle = ScriptedHandle(ReplicaLost("ActorDiedError"), ("replica-b", RESULT))
    assert await engine(handle, facts).run(request()) == RESULT
    assert handle.calls == 2


@pytest.mark.parametrize("second", [ReplicaLost("ActorDiedError"), NoReplica("none within 1 s")])
async def test_a_second_failure_is_503_with_retry_after(facts: ModelFacts, second: Exception) -> None:
    handle = ScriptedHandle(ReplicaLost("ActorDiedError"), second)
    with pytest.raises(Unavailable) as refused:
        await engine(handle, facts).run(request())
    assert refused.value.status == 503 and refused.value.retry_after == RETRY_AFTER_S
    assert handle.calls == 2  # once more, never a third time


async def test_no_replica_at_all_is_503_without_a_retry(facts: ModelFacts) -> None:
    handle = ScriptedHandle(NoReplica("none within 1 s"))
    with pytest.raises(Unavailable):
        await engine(handle, facts).run(request())
    assert handle.calls == 1


async def test_the_models_own_errors_are_not_retried(facts: ModelFacts) -> None:
    handle = ScriptedHandle(InvalidRequest("bad"), ("replica-b", RESULT))
    with pytest.raises(InvalidRequest):
        await engine(handle, facts).run(request())
    assert handle.calls == 1


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (request("<NOT_A_TASK>"), InvalidTaskInput),
        (request("<CAPTION_TO_PHRASE_GROUNDING>"), InvalidTaskInput),  # needs text
        (request(max_new_tokens=33), InvalidRequest),
        (request(num_beams=4), InvalidRequest),
    ],
)
async def test_bad_requests_are_refused_before_anything_is_sent(
    facts: ModelFacts, bad: TaskRequest, error: type[Exception]
) -> None:
    handle = ScriptedHandle()
    with pytest.raises(error):
        await engine(handle, facts).run(bad)
    assert handle.calls == 0
    assert engine(handle, facts).is_text_task("<CAPTION>") and not engine(handle, facts).is_text_task("<OD>")


async def test_a_stream_is_retried_while_no_text_was_sent(facts: ModelFacts) -> None:
    handle = ScriptedHandle(ReplicaLost("before"), ("replica-b", RESULT))
    items = [item async for item in engine(handle, facts).stream(request())]
    assert items == ["a ", "cat", RESULT] and handle.calls == 2


async def test_a_stream_that_sent_text_ends_with_503(facts: ModelFacts) -> None:
    handle = ScriptedHandle(ReplicaLost("after"), ("replica-b", RESULT))
    items: list[object] = []
    with pytest.raises(Unavailable):
        async for item in engine(handle, facts).stream(request()):
            items.append(item)
    assert items == ["a ", "cat"] and handle.calls == 1  # the client has read text: not sent again


def test_the_response_names_the_replicas_that_answered(facts: ModelFacts) -> None:
    handle = ScriptedHandle(("replica-a", RESULT), ReplicaLost("ActorDiedError"), ("replica-b", RESULT))
    remote = engine(handle, facts)

    async def two_calls(_: Request) -> Response:
        await remote.run(request())
        await remote.run(request())  # retried on another replica
        return JSONResponse({})

    async def no_call(_: Request) -> Response:
        return JSONResponse({})

    app = Starlette(routes=[Route("/two", two_calls), Route("/none", no_call)])
    with TestClient(ModelReplicaMiddleware(app)) as client:
        assert client.get("/two").headers[HEADER] == "replica-a, replica-b"
        assert HEADER not in client.get("/none").headers  # negative control: no call, no header
