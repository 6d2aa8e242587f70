"""Edge functions on the tiny model over real HTTP: every example, failures kept to their own request, hot reload."""

from __future__ import annotations

import io
import time
from pathlib import Path

from e2e_support import MAX_NEW_TOKENS, CountingLoader, ImageServer
from live_server import LiveServer, call
from PIL import Image

JPEG = {"Content-Type": "image/jpeg"}


def _photo(image_server: ImageServer) -> bytes:
    return (image_server.folder / "photo.jpg").read_bytes()


def _assert_box(box: list[float], width: int = 320, height: int = 240) -> None:
    assert len(box) == 4 and 0 <= box[0] <= box[2] <= width and 0 <= box[1] <= box[3] <= height


def test_caption_by_url(e2e_server: LiveServer, image_server: ImageServer) -> None:
    reply = call(e2e_server.url, "GET", f"/caption?url={image_server.url}/photo.jpg&detail=2&max_tokens=6")
    assert reply.status == 200, reply.body
    body = reply.json()
    assert isinstance(body["caption"], str) and body["task"] == "<MORE_DETAILED_CAPTION>"
    assert body["usage"]["completion_tokens"] <= 6


def test_detect_json_and_annotated_png(e2e_server: LiveServer, image_server: ImageServer) -> None:
    reply = call(e2e_server.url, "POST", "/detect?max_tokens=12", body=_photo(image_server), headers=JPEG)
    assert reply.status == 200, reply.body
    for item in reply.json()["objects"]:
        assert isinstance(item["label"], str)
        _assert_box(item["box"])
    reply = call(e2e_server.url, "POST", "/detect/annotated.png?max_tokens=12", body=_photo(image_server), headers=JPEG)
    assert reply.status == 200 and reply.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(reply.body)).size == (320, 240)


def test_ocr_regions(e2e_server: LiveServer, image_server: ImageServer) -> None:
    reply = call(e2e_server.url, "GET", f"/ocr?url={image_server.url}/photo.png")
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["usage"]["completion_tokens"] <= MAX_NEW_TOKENS
    for region in body["regions"]:
        assert isinstance(region["text"], str) and len(region["quad"]) == 8


def test_region_from_pixels(e2e_server: LiveServer, image_server: ImageServer) -> None:
    for task in ("description", "category", "segmentation"):
        reply = call(
            e2e_server.url, "POST", f"/region?box=30,120,150,220&task={task}", body=_photo(image_server), headers=JPEG
        )
        assert reply.status == 200, reply.body
        answer = reply.json()["answer"]
        assert isinstance(answer, dict) if task == "segmentation" else isinstance(answer, str)


def test_phrase_grounding(e2e_server: LiveServer, image_server: ImageServer) -> None:
    reply = call(
        e2e_server.url,
        "GET",
        f"/ground?url={image_server.url}/photo.jpg&caption=a%20green%20box%20and%20a%20red%20ball",
    )
    assert reply.status == 200, reply.body
    for phrase in reply.json()["phrases"]:
        _assert_box(phrase["box"])


def test_failing_functions_next_to_a_healthy_one(e2e_server: LiveServer) -> None:
    raised = call(e2e_server.url, "GET", "/raising")
    assert raised.status == 500 and raised.error["code"] == "function_error"
    assert "ValueError: broken on purpose" in raised.error["message"]
    assert "tok-e2e-secret-value" not in raised.body.decode()  # a secret from .env is scrubbed
    unimportable = call(e2e_server.url, "GET", "/unimportable")
    assert unimportable.status == 500 and "ModuleNotFoundError" in unimportable.error["message"]
    started = time.monotonic()
    hanging = call(e2e_server.url, "GET", "/hanging")
    assert hanging.status == 408 and hanging.error["code"] == "timeout"
    assert 7.5 <= time.monotonic() - started < 20
    healthy = call(e2e_server.url, "GET", "/healthy")
    assert healthy.status == 200 and healthy.json() == {"ok": True, "greeting": "hello"}
    assert call(e2e_server.url, "GET", "/readyz").status == 200


def test_hot_reload_without_reloading_the_model(
    e2e_server: LiveServer, e2e_functions: Path, engine_loader: CountingLoader
) -> None:
    assert call(e2e_server.url, "GET", "/editable").body == b"version 1"
    (e2e_functions / "editable.py").write_text("async def fetch(request, env, ctx):\n    return 'version 2'\n")
    assert call(e2e_server.url, "GET", "/editable").body == b"version 2"
    (e2e_functions / "editable.py").write_text("async def fetch(request, env, ctx) oops\n")
    assert call(e2e_server.url, "GET", "/editable").status == 500
    (e2e_functions / "editable.py").write_text("async def fetch(request, env, ctx):\n    return 'version 3'\n")
    assert call(e2e_server.url, "GET", "/editable").body == b"version 3"
    (e2e_functions / "brand_new.py").write_text("async def fetch(request, env, ctx):\n    return 'new'\n")
    assert call(e2e_server.url, "GET", "/brand_new").body == b"new"
    assert engine_loader.loads == 1
