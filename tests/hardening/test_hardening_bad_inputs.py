"""The catalogue of bad (and odd but valid) inputs, over real HTTP against the tiny model, one row per case.

Each row names the request, the status and the error code it must get. After every row the server must still say
ready and still answer a valid request; every answer of the completions endpoint must match the OpenAPI document.
Valid oddities (CMYK, 16-bit, 1x1, 20000x10 images, an animated GIF ...) expect 200.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import hardening_images as images
import pytest
from hardening_hosts import PUBLIC_NAME, ImageHost
from hardening_server import MAX_NEW_TOKENS, MAX_REDIRECTS, SMALL_PNG, SMALL_PNG_URL, completion_body
from hardening_spec import Spec
from live_server import LiveServer, Reply, call

COMPLETIONS = "/v1/chat/completions"
JSON = "application/json"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | Iterable[bytes] | None = None
    content_type: str | None = JSON


Build = Callable[[ImageHost], Request]
Url = str | Callable[[ImageHost], str]


@dataclass(frozen=True)
class Case:
    name: str
    build: Build
    expect: tuple[int, str | None]  # the status, and the error code (None for a 200)


OK = (200, None)
NOT_JSON = (400, "invalid_request")
PAYLOAD = (400, "invalid_payload")
TASK_INPUT = (400, "invalid_task_input")
BAD_IMAGE = (400, "invalid_image")
BAD_URL = (400, "unsupported_url")
FETCH_FAILED = (400, "image_fetch_failed")
NO_STREAM = (400, "stream_not_supported")
NO_MODEL = (404, "model_not_found")
NO_FUNCTION = (404, "function_not_found")
NOT_FOUND = (404, "not_found")
NO_METHOD = (405, "method_not_allowed")
TOO_LARGE = (413, "payload_too_large")
MEDIA_TYPE = (415, "unsupported_media_type")
FETCH_TIMEOUT = (504, "image_fetch_timeout")


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def hosted(path: str, host_name: str = PUBLIC_NAME) -> Url:
    return lambda host: host.url(path, host_name)


DROP = object()


def completion(text: str = "<CAPTION>", image: Url = SMALL_PNG_URL, **fields: object) -> Build:
    """The valid request with another text part, image URL or top-level fields (DROP removes one)."""

    def build(host: ImageHost) -> Request:
        body = completion_body(image(host) if callable(image) else image, text)
        for name, value in fields.items():
            if value is DROP:
                body.pop(name, None)
            else:
                body[name] = value
        return Request("POST", COMPLETIONS, json.dumps(body).encode())

    return build


def edited(change: Callable[[dict[str, Any]], object]) -> Build:
    """The valid request changed in place by ``change`` (for edits below the top level)."""

    def build(host: ImageHost) -> Request:
        body = completion_body()
        change(body)
        return Request("POST", COMPLETIONS, json.dumps(body).encode())

    return build


def content(body: dict[str, Any]) -> list[Any]:
    return body["messages"][0]["content"]


def raw(
    data: bytes | Iterable[bytes] | None, content_type: str | None = JSON, method: str = "POST", path: str = COMPLETIONS
) -> Build:
    return lambda host: Request(method, path, data, content_type)


@dataclass(frozen=True)
class Chunks:
    """A body sent with chunked encoding, ``total`` bytes of spaces; iterable again for each send."""

    total: int
    size: int = MiB

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, self.total, self.size):
            yield b" " * min(self.size, self.total - start)


def shouted(path: str) -> Url:
    return lambda host: host.url(path, PUBLIC_NAME.upper()).replace("http:", "HTTP:")


def with_raw_json(old: str, new: str) -> Build:
    """The valid request with a piece of its JSON text replaced (for what ``json.dumps`` will not write)."""
    return raw(json.dumps(completion_body()).replace(old, new, 1).encode())


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def upload(path: str, data: bytes, media_type: str = "image/png") -> Build:
    """An example function called with ``data`` as the POSTed body."""
    return raw(data, media_type, "POST", path)


NAN_MAX_TOKENS = json.dumps(completion_body()).replace('"max_tokens": 2', '"max_tokens": NaN').encode()
TEN_MB_TEXT = "a cat " * (10 * MiB // 6)
PERCENT_ENCODED_PNG = "".join(f"%{byte:02X}" for byte in SMALL_PNG)
OVER = MAX_NEW_TOKENS + 1
DIGITS_5000 = "9" * 5000
TWO = '"max_tokens": 2'
TEXT = '"type": "text"'
VALID_JSON = json.dumps(completion_body()).encode()
BMP_UNKNOWN_HEADER = images.bmp_unknown_header()

CATALOGUE: tuple[Case, ...] = (
    # The body itself
    Case("malformed JSON", raw(b'{"model": "x", "messages": ['), NOT_JSON),
    Case("empty body", raw(b""), NOT_JSON),
    Case("JSON array", raw(b"[]"), NOT_JSON),
    Case("JSON string", raw(b'"hello"'), NOT_JSON),
    Case("JSON null", raw(b"null"), NOT_JSON),
    Case("JSON number", raw(b"42"), NOT_JSON),
    Case("invalid UTF-8", raw(b'{"model": "\xff\xfe"}'), NOT_JSON),
    Case("JSON nested 100000 deep", raw(b"[" * 100_000 + b"]" * 100_000), NOT_JSON),
    Case("NaN for max_tokens", raw(NAN_MAX_TOKENS), PAYLOAD),
    Case("text/plain content type", raw(json.dumps(completion_body()).encode(), "text/plain"), MEDIA_TYPE),
    Case("form content type", raw(b"model=x", "application/x-www-form-urlencoded"), MEDIA_TYPE),
    Case("no content type (JSON assumed)", raw(json.dumps(completion_body()).encode(), None), OK),
    Case("17 MB body, Content-Length", raw(b" " * (17 * MiB)), TOO_LARGE),
    Case("17 MB body, chunked", raw(Chunks(17 * MiB)), TOO_LARGE),
    Case("a million content parts", edited(lambda b: b["messages"][0].update(content=[{}] * 1_000_000)), PAYLOAD),
    Case("a million messages", edited(lambda b: b.update(messages=[{}] * 1_000_000)), PAYLOAD),
    # model
    Case("no model", completion(model=DROP), PAYLOAD),
    Case("model is a number", completion(model=123), PAYLOAD),
    Case("model is empty", completion(model=""), PAYLOAD),
    Case("unknown model", completion(model="gpt-4o"), NO_MODEL),
    Case("model in the wrong case", completion(model="microsoft/florence-2-large"), NO_MODEL),
    Case("platform spelling of the model", completion(model="microsoft-florence-2-large"), OK),
    # messages
    Case("no messages", completion(messages=DROP), PAYLOAD),
    Case("messages is an object", completion(messages={"role": "user"}), PAYLOAD),
    Case("messages is empty", completion(messages=[]), PAYLOAD),
    Case("two messages", edited(lambda b: b["messages"].append(copy.deepcopy(b["messages"][0]))), PAYLOAD),
    Case("system role", edited(lambda b: b["messages"][0].update(role="system")), PAYLOAD),
    Case("no role", edited(lambda b: b["messages"][0].pop("role")), PAYLOAD),
    Case("content is a string", edited(lambda b: b["messages"][0].update(content="<CAPTION>")), PAYLOAD),
    Case("content is empty", edited(lambda b: b["messages"][0].update(content=[])), PAYLOAD),
    Case("no image", edited(lambda b: content(b).pop(0)), PAYLOAD),
    Case("no text", edited(lambda b: content(b).pop(1)), PAYLOAD),
    Case("two images", edited(lambda b: content(b).insert(0, copy.deepcopy(content(b)[0]))), PAYLOAD),
    Case("two texts, no image", edited(lambda b: content(b).__setitem__(0, copy.deepcopy(content(b)[1]))), PAYLOAD),
    Case("audio part", edited(lambda b: content(b)[1].update(type="input_audio")), PAYLOAD),
    Case("part without a type", edited(lambda b: content(b)[1].pop("type")), PAYLOAD),
    Case("image_url without url", edited(lambda b: content(b)[0].update(image_url={})), PAYLOAD),
    Case("image_url as a bare string", edited(lambda b: content(b)[0].update(image_url="https://a.example/")), PAYLOAD),
    Case("url is a number", edited(lambda b: content(b)[0].update(image_url={"url": 7})), PAYLOAD),
    Case("relative url", completion(image="photo.png"), PAYLOAD),
    Case("text is a number", edited(lambda b: content(b)[1].update(text=5)), PAYLOAD),
    Case("extra OpenAI fields", completion(temperature=0.2, top_p=0.9, user="u1", n=1), OK),
    Case("extra field in a part", edited(lambda b: content(b)[0]["image_url"].update(detail="high")), OK),
    # The task
    Case("unknown tag", completion(text="<FOO>"), PAYLOAD),
    Case("misspelled tag", completion(text="<CAPTON>"), PAYLOAD),
    Case("lower-case tag", completion(text="<caption>"), PAYLOAD),
    Case("no tag", completion(text="describe this picture"), PAYLOAD),
    Case("published phrase-grounding tag", completion(text="<PHRASE_GROUNDING>a dog"), PAYLOAD),
    Case("input on a no-input tag", completion(text="<CAPTION>a red square"), PAYLOAD),
    Case("region of three locations", completion(text="<REGION_TO_CATEGORY><loc_1><loc_2><loc_3>"), PAYLOAD),
    Case("region location 1000", completion(text="<REGION_TO_CATEGORY><loc_1><loc_2><loc_3><loc_1000>"), PAYLOAD),
    Case("region with words", completion(text="<REGION_TO_CATEGORY>the left half"), PAYLOAD),
    Case("region tag alone", completion(text="<REGION_TO_DESCRIPTION>"), PAYLOAD),
    Case("grounding without a caption", completion(text="<CAPTION_TO_PHRASE_GROUNDING>"), PAYLOAD),
    Case("a tag inside the input", completion(text="<OPEN_VOCABULARY_DETECTION>a cat <OD>"), PAYLOAD),
    Case("<image> inside the input", completion(text="<CAPTION_TO_PHRASE_GROUNDING>a cat <image>"), PAYLOAD),
    Case("10 MB of text input", completion(text="<CAPTION_TO_PHRASE_GROUNDING>" + TEN_MB_TEXT), TASK_INPUT),
    Case("region task", completion(text="<REGION_TO_SEGMENTATION><loc_100><loc_100><loc_900><loc_900>"), OK),
    Case("grounding task", completion(text="<CAPTION_TO_PHRASE_GROUNDING>a red square"), OK),
    # Generation options
    Case("max_tokens 0", completion(max_tokens=0), PAYLOAD),
    Case("max_tokens -1", completion(max_tokens=-1), PAYLOAD),
    Case("max_tokens over the limit", completion(max_tokens=OVER), PAYLOAD),
    Case("max_tokens 10**30", completion(max_tokens=10**30), PAYLOAD),
    Case("max_tokens 2.5", completion(max_tokens=2.5), PAYLOAD),
    Case("max_tokens as a string", completion(max_tokens="2"), PAYLOAD),
    Case("max_tokens true", completion(max_tokens=True), PAYLOAD),
    Case("max_completion_tokens over the limit", completion(max_completion_tokens=OVER), PAYLOAD),
    Case("max_tokens over, max_completion_tokens in", completion(max_tokens=OVER, max_completion_tokens=2), PAYLOAD),
    Case("max_tokens at the limit", completion(max_tokens=MAX_NEW_TOKENS), OK),
    Case("num_beams 0", completion(num_beams=0), PAYLOAD),
    Case("num_beams over the limit", completion(num_beams=99), PAYLOAD),
    Case("stream as a string", completion(stream="yes"), PAYLOAD),
    Case("stream_options as a list", completion(stream=True, stream_options=[1]), PAYLOAD),
    Case("stream with a structured task", completion(text="<OD>", stream=True), NO_STREAM),
    Case("stream with a text task", completion(stream=True, stream_options={"include_usage": True}), OK),
    # data: URLs
    Case("invalid base64", completion(image="data:image/png;base64,iVBORw0K!!!!"), BAD_IMAGE),
    Case("data: URL without a comma", completion(image="data:image/png;base64"), BAD_IMAGE),
    Case("data: URL of text/plain", completion(image="data:text/plain;base64,aGVsbG8="), MEDIA_TYPE),
    Case("empty data: URL", completion(image="data:image/png;base64,"), MEDIA_TYPE),
    Case("non-image bytes", completion(image=data_url(b"just some bytes, not a picture" * 10)), MEDIA_TYPE),
    Case("truncated JPEG", completion(image=data_url(images.truncated_jpeg(), "image/jpeg")), BAD_IMAGE),
    Case("truncated PNG", completion(image=data_url(images.truncated_png())), BAD_IMAGE),
    Case("14 MB data: URL", completion(image="data:image/png;base64," + "A" * (14 * MiB)), TOO_LARGE),
    Case("decompression-bomb PNG", completion(image=data_url(images.decompression_bomb_png())), TOO_LARGE),
    Case("TIFF", completion(image=data_url(images.tiff(), "image/tiff")), MEDIA_TYPE),
    Case("TIFF labelled PNG", completion(image=data_url(images.tiff())), MEDIA_TYPE),
    Case("SVG", completion(image=data_url(images.SVG)), MEDIA_TYPE),
    Case("PDF", completion(image=data_url(images.PDF)), MEDIA_TYPE),
    Case("percent-encoded data: URL", completion(image="data:image/png," + PERCENT_ENCODED_PNG), OK),
    Case("base64 broken into lines", completion(image=data_url(SMALL_PNG).replace("A", "A%0A")), OK),
    # Odd but valid images
    Case("animated GIF", completion(image=data_url(images.animated_gif(), "image/gif")), OK),
    Case("1x1 image", completion(image=data_url(images.png((1, 1)))), OK),
    Case("20000x10 image", completion(image=data_url(images.png((20_000, 10)))), OK),
    Case("10x20000 image", completion(image=data_url(images.png((10, 20_000)))), OK),
    Case("CMYK JPEG", completion(image=data_url(images.jpeg(mode="CMYK"), "image/jpeg")), OK),
    Case("grey JPEG", completion(image=data_url(images.jpeg(mode="L"), "image/jpeg")), OK),
    Case("16-bit PNG", completion(image=data_url(images.png(mode="I;16"))), OK),
    Case("palette PNG", completion(image=data_url(images.png(mode="P"))), OK),
    Case("RGBA PNG", completion(image=data_url(images.png(mode="RGBA"))), OK),
    Case("1-bit PNG", completion(image=data_url(images.png(mode="1"))), OK),
    Case("EXIF-rotated JPEG", completion(image=data_url(images.rotated_jpeg(), "image/jpeg")), OK),
    Case("WebP", completion(image=data_url(images.encode(images.Image.new("RGB", (30, 20)), "WEBP"))), OK),
    Case("BMP", completion(image=data_url(images.encode(images.Image.new("RGB", (30, 20)), "BMP"), "image/bmp")), OK),
    Case("PNG labelled JPEG", completion(image=data_url(SMALL_PNG, "image/jpeg")), OK),
    # URL schemes
    Case("file: URL", completion(image="file:///etc/passwd"), BAD_URL),
    Case("ftp: URL", completion(image="ftp://images.example/photo.png"), BAD_URL),
    Case("gopher: URL", completion(image="gopher://images.example:70/1"), BAD_URL),
    Case("javascript: URL", completion(image="javascript:alert(1)"), BAD_URL),
    Case("http: URL without a host", completion(image="http:///photo.png"), BAD_URL),
    Case("1 MB http: URL", completion(image="https://images.example/" + "a" * MiB), PAYLOAD),
    Case("1 MB data: URL header", completion(image="data:image/png;" + "a=b;" * (MiB // 4) + "base64,AAAA"), PAYLOAD),
    Case("port 99999", completion(image=f"http://{PUBLIC_NAME}:99999/photo.png"), BAD_URL),
    Case("host that is not valid IDNA", completion(image="http://xn--/photo.png"), BAD_URL),
    # Images from the image host (the allowed "public" one)
    Case("photo over http", completion(image=hosted("/photo.jpg")), OK),
    Case("untyped photo", completion(image=hosted("/untyped")), OK),
    Case("upper-case scheme and host", completion(image=shouted("/photo.png")), OK),
    Case(f"{MAX_REDIRECTS} redirects (the limit)", completion(image=hosted(f"/hop/{MAX_REDIRECTS - 1}")), OK),
    Case("HTML page", completion(image=hosted("/page.html")), MEDIA_TYPE),
    Case("text served as image/png", completion(image=hosted("/text.png")), MEDIA_TYPE),
    Case("gzip bomb with Content-Encoding", completion(image=hosted("/gzip-bomb")), MEDIA_TYPE),
    Case("gzip bomb untyped", completion(image=hosted("/gzip-untyped")), MEDIA_TYPE),
    Case("decompression bomb over http", completion(image=hosted("/bomb.png")), TOO_LARGE),
    Case("image server 404", completion(image=hosted("/missing.png")), FETCH_FAILED),
    Case("image server 500", completion(image=hosted("/error")), FETCH_FAILED),
    Case("50 MB declared", completion(image=hosted("/declared-too-big")), TOO_LARGE),
    Case("endless body", completion(image=hosted("/endless")), TOO_LARGE),
    Case("slow image server", completion(image=hosted("/slow")), FETCH_TIMEOUT),
    Case("image server stalls mid-body", completion(image=hosted("/stalls")), FETCH_TIMEOUT),
    Case("image server hangs up", completion(image=hosted("/hangs-up")), FETCH_FAILED),
    Case("image body cut short", completion(image=hosted("/cut-short")), FETCH_FAILED),
    Case("redirect without Location", completion(image=hosted("/no-location")), FETCH_FAILED),
    Case("redirect to file:", completion(image=hosted("/to?url=file:///etc/passwd")), BAD_URL),
    Case("redirect to port 99999", completion(image=hosted("/to?url=http://images.example:99999/")), BAD_URL),
    Case("unknown host name", completion(image="http://no-such-host.example/photo.png"), FETCH_FAILED),
    Case("closed port, allowed address", completion(image=lambda h: f"http://{h.address}:1/photo.png"), FETCH_FAILED),
    # Routes
    Case("GET on completions", raw(None, None, "GET"), NO_METHOD),
    Case("DELETE on models", raw(None, None, "DELETE", "/v1/models"), NO_METHOD),
    Case("POST on openapi.json", raw(b"{}", JSON, "POST", "/openapi.json"), NO_METHOD),
    Case("unknown function", raw(None, None, "GET", "/no-such-function"), NO_FUNCTION),
    Case("path traversal as a function", raw(None, None, "GET", "/..%2F..%2Fetc%2Fpasswd"), NO_FUNCTION),
    Case("300-character path segment", raw(None, None, "GET", "/" + "a" * 300), NO_FUNCTION),
    Case("100 kB request line", raw(None, None, "GET", "/" + "a" * 100_000), NOT_JSON),
    Case("made-up method", raw(None, None, "PURGE", "/v1/models"), NO_METHOD),
    Case("trailing slash on completions", raw(VALID_JSON, JSON, "POST", COMPLETIONS + "/"), NOT_FOUND),
    # Encodings and sizes that Python's own parsers refuse
    Case("lone surrogate in the text", completion(text="<CAPTION>\ud800"), NOT_JSON),
    Case("lone surrogate in grounding text", completion(text="<CAPTION_TO_PHRASE_GROUNDING>a \ud800 dog"), NOT_JSON),
    Case("lone surrogate in the role", edited(lambda b: b["messages"][0].update(role="\udfff")), NOT_JSON),
    Case("lone surrogate in the model", completion(model="\ud800"), NOT_JSON),
    Case("lone surrogate in a field name", completion(**{"x\ud800": 1}), NOT_JSON),
    Case("5000-digit integer in an ignored field", with_raw_json(TWO, f"{TWO}, \"n\": {DIGITS_5000}"), NOT_JSON),
    Case("5000-digit max_tokens", with_raw_json(TWO, TWO.replace("2", DIGITS_5000)), NOT_JSON),
    Case("JSON 980 deep in a content part", with_raw_json(TEXT, f'"deep": {nested(980)}, {TEXT}'), NOT_JSON),
    Case("JSON 980 deep as the text", with_raw_json('"text": "<CAPTION>"', f'"text": {nested(980)}'), NOT_JSON),
    Case("JSON 980 deep in the image_url", with_raw_json('{"url"', f'{{"deep": {nested(980)}, "url"'), NOT_JSON),
    # The example functions (what users copy) with the same kind of input
    Case("caption: max_tokens=²", upload("/caption?max_tokens=%C2%B2", SMALL_PNG), NOT_JSON),
    Case("caption: 5000-digit max_tokens", upload(f"/caption?max_tokens={DIGITS_5000}", SMALL_PNG), NOT_JSON),
    Case("caption: BMP with an unknown header", upload("/caption", BMP_UNKNOWN_HEADER, "image/bmp"), BAD_IMAGE),
    Case("caption: upload", upload("/caption?max_tokens=2", SMALL_PNG), OK),
    Case("region: 5000-digit box", upload(f"/region?box={DIGITS_5000},1,2,3", SMALL_PNG), NOT_JSON),
    Case("region: box of nan", upload("/region?box=nan,1,2,3", SMALL_PNG), NOT_JSON),
    Case("region: box of inf", upload("/region?box=0,0,inf,3", SMALL_PNG), NOT_JSON),
    Case("region: 20000x20000 upload", upload("/region?box=1,1,2,2", images.decompression_bomb_png()), TOO_LARGE),
    Case("region: BMP with an unknown header", upload("/region?box=1,1,2,2", BMP_UNKNOWN_HEADER), BAD_IMAGE),
    Case("region: not an image", upload("/region?box=1,1,2,2", b"just text" * 10, "text/plain"), MEDIA_TYPE),
    Case("region: max_tokens=²", upload("/region?box=1,1,20,20&max_tokens=%C2%B2", SMALL_PNG), NOT_JSON),
    Case("region: upload", upload("/region?box=1,1,20,20&max_tokens=2", SMALL_PNG), OK),
    Case("detect: 20000x20000 upload", upload("/detect/annotated.png", images.decompression_bomb_png()), TOO_LARGE),
    Case("ocr: 5000-digit max_tokens", upload(f"/ocr?max_tokens={DIGITS_5000}", SMALL_PNG), NOT_JSON),
    Case("ground: max_tokens=²", upload("/ground?caption=a%20dog&max_tokens=%C2%B2", SMALL_PNG), NOT_JSON),
)  # fmt: skip


def test_the_catalogue_is_large_and_unique() -> None:
    assert len(CATALOGUE) >= 60
    names = [case.name for case in CATALOGUE]
    assert len(names) == len(set(names))


def send(server: LiveServer, request: Request) -> Reply:
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    return call(server.url, request.method, request.path, body=request.body, headers=headers, timeout_s=60)


def assert_still_serving(server: LiveServer) -> None:
    assert call(server.url, "GET", "/readyz").status == 200
    reply = call(server.url, "POST", COMPLETIONS, json_body=completion_body())
    assert reply.status == 200, reply.body[:300]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CATALOGUE, ids=[case.name for case in CATALOGUE])
def test_bad_input(case: Case, tiny_server: LiveServer, public_host: ImageHost, spec: Spec) -> None:
    request = case.build(public_host)
    reply = send(tiny_server, request)
    status, code = case.expect
    assert reply.status == status, reply.body[:500]
    assert reply.headers.get("x-request-id")
    if code is None:
        if reply.headers["content-type"].startswith(JSON) and request.path == COMPLETIONS:
            assert reply.json()["object"] == "chat.completion"
    else:
        assert reply.error["code"] == code, reply.error
        assert reply.error["message"]
    if request.path == COMPLETIONS and request.method == "POST":
        spec.check(request.method, request.path, reply.status, reply.headers, reply.body)
    assert_still_serving(tiny_server)


HEAVY = ("14 MB data: URL", "a million content parts", "10 MB of text input", "1 MB http: URL", "17 MB body, chunked")


def _stalls_over_half_a_second(server: LiveServer) -> float:
    lines = call(server.url, "GET", "/metrics").body.decode().splitlines()

    def value(series: str) -> float:
        return next(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(series + " "))

    return value("florence_event_loop_lag_seconds_count") - value('florence_event_loop_lag_seconds_bucket{le="0.5"}')


@pytest.mark.timeout(120)
def test_heavy_requests_do_not_stall_the_others(tiny_server: LiveServer, public_host: ImageHost) -> None:
    """Parsing, checking and refusing the heaviest bodies happens off the event loop, in time linear in their size:
    the loop never stalls for half a second (the server's own lag histogram says so)."""
    cases = [case for case in CATALOGUE if case.name in HEAVY] * 3
    assert len(cases) == 3 * len(HEAVY)
    before = _stalls_over_half_a_second(tiny_server)
    replies: list[Reply] = []
    threads = [
        threading.Thread(target=lambda c=case: replies.append(send(tiny_server, c.build(public_host))))
        for case in cases
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(reply.status for reply in replies) == sorted(case.expect[0] for case in cases)
    tiny_server.wait_for_loop_monitor()
    assert _stalls_over_half_a_second(tiny_server) == before
