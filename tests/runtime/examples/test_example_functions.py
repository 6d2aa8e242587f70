"""The example functions of functions/ over real HTTP, on a fake engine whose answers are known exactly.

(The same functions run on the real tiny model in tests/runtime/e2e; random weights rarely produce boxes, so the
exact shapes of boxes, quads and drawn pixels are checked here.)
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeEngine, image_bytes
from live_server import LiveServer, call
from PIL import Image

from runtime.config import Limits, ModelSpec, ServerSettings, Settings
from runtime.server.services import Services

FUNCTIONS_DIR = Path(__file__).resolve().parents[3] / "functions"
PNG_HEADERS = {"Content-Type": "image/png"}


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def server(engine: FakeEngine) -> Iterator[LiveServer]:
    settings = Settings(
        server=ServerSettings(functions_dir=FUNCTIONS_DIR),
        limits=Limits(invocation_timeout_s=10),
        models=(ModelSpec(ids=("microsoft-florence-2-large",), path=Path("/fake")),),
    )
    with LiveServer(Services(settings, engine_loader=lambda path, options: engine)) as live:
        yield live


def test_caption(server: LiveServer, engine: FakeEngine) -> None:
    reply = call(server.url, "POST", "/caption?detail=1", body=image_bytes((0, 255, 0), (30, 20)), headers=PNG_HEADERS)
    assert reply.status == 200
    assert reply.json()["caption"] == "a green image of 30 by 20 pixels"
    assert reply.json()["task"] == "<DETAILED_CAPTION>"
    assert engine.requests[-1].task == "<DETAILED_CAPTION>"
    assert call(server.url, "GET", "/caption").error["param"] == "url"
    assert call(server.url, "GET", "/caption?url=x&detail=7").error["param"] == "detail"


def test_detect_json(server: LiveServer) -> None:
    reply = call(server.url, "POST", "/detect", body=image_bytes((255, 0, 0), (40, 20)), headers=PNG_HEADERS)
    assert reply.status == 200
    assert reply.json()["objects"] == [
        {"label": "red", "box": [0, 0, 20, 20]},
        {"label": "half", "box": [20, 0, 40, 20]},
    ]
    reply = call(server.url, "POST", "/detect?task=proposals", body=image_bytes(size=(40, 20)), headers=PNG_HEADERS)
    assert [o["label"] for o in reply.json()["objects"]] == ["", ""]


def test_detect_annotated_png(server: LiveServer) -> None:
    source = image_bytes((255, 255, 255), (200, 100))
    reply = call(server.url, "POST", "/detect/annotated.png", body=source, headers=PNG_HEADERS)
    assert reply.status == 200 and reply.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(reply.body)).convert("RGB")
    assert drawn.size == (200, 100)
    assert drawn.getpixel((100, 50)) != (255, 255, 255)  # the shared edge of the two halves is outlined
    assert drawn.getpixel((50, 60)) == (255, 255, 255)  # inside a box, away from labels: untouched
    assert call(server.url, "GET", "/detect/annotated.png?url=https://example.com/x.png").status == 400


def test_ocr(server: LiveServer) -> None:
    reply = call(server.url, "POST", "/ocr", body=image_bytes((0, 0, 255), (50, 10)), headers=PNG_HEADERS)
    assert reply.status == 200
    body = reply.json()
    assert body["regions"] == [{"text": "a blue image of 50 by 10 pixels", "quad": [0, 0, 50, 0, 50, 10, 0, 10]}]
    assert body["text"] == "a blue image of 50 by 10 pixels"
    assert "warning" not in body


def test_an_answer_cut_at_its_token_limit_says_so(server: LiveServer) -> None:
    for path in ("/ocr?max_tokens=2", "/caption?max_tokens=2"):
        reply = call(server.url, "POST", path, body=image_bytes((0, 0, 255), (50, 10)), headers=PNG_HEADERS)
        assert reply.status == 200
        assert "token limit (2 tokens)" in reply.json()["warning"], path


def test_region_converts_pixels_to_location_tokens(server: LiveServer, engine: FakeEngine) -> None:
    reply = call(
        server.url,
        "POST",
        "/region?box=0,0,100,50&task=category",
        body=image_bytes(size=(200, 100)),
        headers=PNG_HEADERS,
    )
    assert reply.status == 200
    assert reply.json()["task"] == "<REGION_TO_CATEGORY>" and reply.json()["box"] == [0, 0, 100, 50]
    assert engine.requests[-1].text_input == "<loc_0><loc_0><loc_500><loc_500>"
    bad = call(server.url, "POST", "/region?box=0,0,300,50", body=image_bytes(size=(200, 100)), headers=PNG_HEADERS)
    assert bad.status == 400 and bad.error["param"] == "box"
    not_image = call(server.url, "POST", "/region?box=0,0,1,1", body=b"hello", headers={"Content-Type": "text/plain"})
    assert not_image.status == 415


def test_ground(server: LiveServer, engine: FakeEngine) -> None:
    reply = call(
        server.url, "POST", "/ground?caption=a%20red%20car", body=image_bytes(size=(40, 20)), headers=PNG_HEADERS
    )
    assert reply.status == 200
    assert reply.json()["caption"] == "a red car"
    assert engine.requests[-1].task == "<CAPTION_TO_PHRASE_GROUNDING>" and engine.requests[-1].text_input == "a red car"
    assert [p["box"] for p in reply.json()["phrases"]] == [[0, 0, 20, 20], [20, 0, 40, 20]]
    assert call(server.url, "GET", "/ground?url=https://example.com/x.png").error["param"] == "caption"


def test_every_example_has_a_readme_line() -> None:
    readme = (FUNCTIONS_DIR / "README.md").read_text()
    for name in ("caption", "detect", "ocr", "region", "ground"):
        assert f"`{name}" in readme
