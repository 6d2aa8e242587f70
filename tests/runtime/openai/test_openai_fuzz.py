"""Random and mutated request bodies over HTTP: every answer is a completion or an error envelope, never a 500.

Image fetching is replaced by a stub: a random URL must never become traffic to some address.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEngine, data_url, image_bytes, payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import LiveServer, call

from runtime.config import Limits, ModelSpec, ServerSettings, Settings
from runtime.errors import ImageFetchFailed
from runtime.media.fetch import ImageFetcher
from runtime.server.services import Services

MODEL = "microsoft/Florence-2-large"
ALLOWED = {200, 400, 404, 413, 415}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
urls = st.sampled_from(
    [data_url(image_bytes()), "data:image/png;base64,!!", "data:text/plain,hi", "ftp://example.com/x.png", "not a url",
     "http://example.com/x.png", "", data_url(b"GIF89a"), "data:image/png;base64," + "A" * 10]
)  # fmt: skip
texts = st.sampled_from(["<CAPTION>", "<OD>", "<REGION_TO_CATEGORY><loc_1><loc_2><loc_3><loc_4>", "<OD>x", "hi"])
PATHS = [
    ("model",), ("messages",), ("messages", 0), ("messages", 0, "role"), ("messages", 0, "content"),
    ("messages", 0, "content", 0), ("messages", 0, "content", 0, "image_url"), ("messages", 0, "content", 1, "type"),
    ("messages", 0, "content", 1, "text"), ("max_tokens",), ("num_beams",), ("stream",), ("stream_options",),
]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    body: Any = {"model": MODEL, **payload(draw(texts), url=draw(urls))}
    if draw(st.booleans()):
        return draw(json_values) if draw(st.booleans()) else body
    path = draw(st.sampled_from(PATHS))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(json_values)
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    async def no_network(self: ImageFetcher, url: str) -> bytes:
        raise ImageFetchFailed("fetching is stubbed out in the fuzz test")

    patch = pytest.MonkeyPatch()
    patch.setattr(ImageFetcher, "fetch", no_network)
    settings_ = Settings(
        server=ServerSettings(functions_dir=tmp_path_factory.mktemp("none")),
        limits=Limits(max_new_tokens=32),
        models=(ModelSpec(ids=("microsoft-florence-2-large",), path=Path("/fake")),),
    )
    try:
        with LiveServer(Services(settings_, engine_loader=lambda path, options: FakeEngine())) as live:
            yield live
    finally:
        patch.undo()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies())
def test_fuzzed_bodies_get_a_completion_or_an_envelope(server: LiveServer, body: Any) -> None:
    reply = call(server.url, "POST", "/v1/chat/completions", body=json.dumps(copy.deepcopy(body)).encode())
    assert reply.status in ALLOWED, (reply.status, reply.body[:500])
    if reply.status == 200:
        assert reply.headers["content-type"].startswith(("application/json", "text/event-stream"))
    else:
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "code", "param"} and error["message"]
