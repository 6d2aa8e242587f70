"""The console in a real browser (headless Chromium): the page loads without errors, an <OD> answer is drawn at the
coordinates the API returned, a dragged region becomes the loc tokens sent, text tasks stream, functions are
invoked and their log lines appear live. Screenshots of each state go to the test's temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from console_support import SECRET, make_photo
from fakes import describe
from live_server import LiveServer, call

from runtime.florence2 import boxes_to_loc_tokens

# Headless Chromium against two live servers; the console's access rules and history stay fast (test_console_access.py,
# test_console_history.py).
pytestmark = pytest.mark.slow

COMPLETIONS = "/v1/chat/completions"
WAIT_MS = 60_000


def open_console(page: Any, server: LiveServer) -> None:
    page.goto(f"{server.url}/_console/")
    page.wait_for_selector("#server-state[data-state=ready]")
    page.wait_for_selector("#task-form select[name=task] option", state="attached")


def run_task(page: Any, photo: Path, task: str, *, beams: int = 1, tokens: int | None = None) -> dict[str, Any]:
    """Pick the photo and the task, press Run; returns the request body sent and the API's answer."""
    if page.eval_on_selector("#stage", "stage => stage.dataset.empty") == "true":
        page.set_input_files("#task-form input[name=image]", str(photo))
        page.wait_for_selector("#stage[data-empty=false]")
    page.select_option("#task-form select[name=task]", task)
    page.fill("#task-form input[name=num_beams]", str(beams))
    if tokens is not None:
        page.fill("#task-form input[name=max_tokens]", str(tokens))
    with page.expect_response(lambda r: r.url.endswith(COMPLETIONS), timeout=WAIT_MS) as answer:
        page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_selector("#run-status[data-state=done], #run-status[data-state=error]", timeout=WAIT_MS)
    response = answer.value
    return {"sent": json.loads(response.request.post_data), "status": response.status, "response": response}


def overlay_rects(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#answer-shapes rect",
        """rects => rects.map(r => ({x: +r.getAttribute('x'), y: +r.getAttribute('y'),
            width: +r.getAttribute('width'), height: +r.getAttribute('height'), label: r.dataset.label}))""",
    )


def assert_overlay_covers_image(page: Any) -> None:
    """The overlay's viewBox is the image's pixels; it is only drawn in place if it covers exactly the image."""
    image = page.locator("#preview").bounding_box()
    overlay = page.locator("#overlay").bounding_box()
    assert all(abs(image[k] - overlay[k]) < 1 for k in ("x", "y", "width", "height")), (image, overlay)


def boxes_as_rects(bboxes: list[list[float]]) -> list[tuple[float, float, float, float]]:
    return [(x1, y1, x2 - x1, y2 - y1) for x1, y1, x2, y2 in bboxes]


def test_the_page_loads_with_tasks_models_and_functions(page: Any, fake_server: LiveServer, shots: Path) -> None:
    open_console(page, fake_server)
    tags = page.eval_on_selector_all("#task-form select[name=task] option", "options => options.map(o => o.value)")
    assert "<OD>" in tags and "<CAPTION>" in tags and "<REGION_TO_CATEGORY>" in tags
    assert "<REGION_TO_OCR>" not in tags  # the request schema does not take it
    assert page.is_visible("#random-warning")
    row = page.locator("#model-table tbody tr[data-model]")
    assert "/models/fake" in row.inner_text() and "random weights" in row.inner_text()
    functions = page.eval_on_selector_all("#function-list li", "items => items.map(i => i.dataset.function)")
    assert {"chatty", "quiet", "raising"} <= set(functions)
    page.screenshot(path=shots / "loaded.png", full_page=True)


def test_od_boxes_are_drawn_where_the_api_put_them(
    page: Any, fake_server: LiveServer, photo: Path, shots: Path
) -> None:
    open_console(page, fake_server)
    run = run_task(page, photo, "<OD>")
    answer = run["response"].json()["result"]["<OD>"]
    assert len(answer["bboxes"]) == 2  # the fake engine boxes the two halves of the image
    rects = overlay_rects(page)
    assert [(r["x"], r["y"], r["width"], r["height"]) for r in rects] == boxes_as_rects(answer["bboxes"])
    assert [r["label"] for r in rects] == answer["labels"]
    assert page.eval_on_selector("#overlay", "svg => svg.getAttribute('viewBox')") == "0 0 320 240"
    assert_overlay_covers_image(page)
    assert json.loads(page.inner_text("#raw-json"))["result"] == {"<OD>": answer}
    page.screenshot(path=shots / "od-fake.png", full_page=True)


def test_a_shifted_box_is_told_apart() -> None:
    """Negative control of the comparison above: a box one pixel off does not match."""
    drawn = [{"x": 0.0, "y": 0.0, "width": 160.0, "height": 240.0}]
    assert [(r["x"], r["y"], r["width"], r["height"]) for r in drawn] == boxes_as_rects([[0, 0, 160, 240]])
    assert [(r["x"], r["y"], r["width"], r["height"]) for r in drawn] != boxes_as_rects([[1, 0, 161, 240]])


def test_a_pasted_image_url_is_shown_and_sent(page: Any, fake_server: LiveServer, image_url: str, photo: Path) -> None:
    open_console(page, fake_server)
    page.fill("#task-form input[name=image_url]", image_url)
    page.press("#task-form input[name=image_url]", "Tab")  # the URL is taken when the field changes
    page.wait_for_selector("#stage[data-empty=false]")
    assert page.get_attribute("#preview", "src") == image_url
    run = run_task(page, photo, "<OD>")
    assert run["sent"]["messages"][0]["content"][0]["image_url"]["url"] == image_url
    answer = run["response"].json()["result"]["<OD>"]
    rects = overlay_rects(page)
    assert [(r["x"], r["y"], r["width"], r["height"]) for r in rects] == boxes_as_rects(answer["bboxes"])
    assert_overlay_covers_image(page)
    page.click("#snippets button[data-snippet=curl]")
    curl = page.inner_text("#snippet-code")
    assert image_url in curl and "base64" not in curl
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["result"] == run["response"].json()["result"], out.stderr


def test_polygons_and_ocr_regions_are_drawn(page: Any, fake_server: LiveServer, photo: Path, shots: Path) -> None:
    open_console(page, fake_server)
    page.select_option("#task-form select[name=task]", "<REFERRING_EXPRESSION_SEGMENTATION>")
    page.fill("#task-form input[name=text_input]", "the red ball")
    run = run_task(page, photo, "<REFERRING_EXPRESSION_SEGMENTATION>")
    assert run["sent"]["messages"][0]["content"][1]["text"] == "<REFERRING_EXPRESSION_SEGMENTATION>the red ball"
    polygons = run["response"].json()["result"]["<REFERRING_EXPRESSION_SEGMENTATION>"]["polygons"]
    drawn = page.eval_on_selector_all("#answer-shapes polygon", "ps => ps.map(p => p.getAttribute('points'))")
    expected = [" ".join(f"{x},{y}" for x, y in zip(p[0::2], p[1::2], strict=True)) for o in polygons for p in o]
    assert drawn == expected and drawn
    page.screenshot(path=shots / "segmentation.png", full_page=True)

    run = run_task(page, photo, "<OCR_WITH_REGION>")
    answer = run["response"].json()["result"]["<OCR_WITH_REGION>"]
    labels = page.eval_on_selector_all("#answer-shapes polygon.quad", "ps => ps.map(p => p.dataset.label)")
    assert labels == [label.strip() for label in answer["labels"]] and labels
    assert page.locator("#answer-shapes text").first.text_content() == labels[0]
    page.screenshot(path=shots / "ocr-regions.png", full_page=True)


def test_od_on_the_tiny_model_draws_every_box_the_api_returned(
    page: Any, model_server: LiveServer, photo: Path, shots: Path
) -> None:
    open_console(page, model_server)
    run = run_task(page, photo, "<OD>", tokens=12)
    assert run["status"] == 200
    answer = run["response"].json()["result"]["<OD>"]
    rects = overlay_rects(page)
    # A random model's boxes differ from CPU to CPU; whatever it returned must be drawn, each where it said.
    assert len(rects) == len(answer["bboxes"])
    assert [(r["x"], r["y"], r["width"], r["height"]) for r in rects] == boxes_as_rects(answer["bboxes"])
    assert_overlay_covers_image(page)
    page.screenshot(path=shots / "od-tiny-model.png", full_page=True)


def test_a_dragged_region_is_sent_as_its_loc_tokens(
    page: Any, fake_server: LiveServer, tmp_path: Path, shots: Path
) -> None:
    big = tmp_path / "big.png"
    make_photo((1600, 1200)).save(big)  # shown scaled down: the drag must be mapped back to the image's pixels
    open_console(page, fake_server)
    page.set_input_files("#task-form input[name=image]", str(big))
    page.wait_for_selector("#stage[data-empty=false]")
    page.select_option("#task-form select[name=task]", "<REGION_TO_CATEGORY>")
    assert_overlay_covers_image(page)
    shown = page.locator("#overlay").bounding_box()
    scale = 1600 / shown["width"]
    assert scale > 1.5
    start, end = (40, 30), (300, 250)  # in screen pixels from the overlay's corner
    page.mouse.move(shown["x"] + start[0], shown["y"] + start[1])
    page.mouse.down()
    page.mouse.move(shown["x"] + end[0], shown["y"] + end[1], steps=8)
    page.mouse.up()
    page.wait_for_selector("#region-tokens[data-tokens]")
    selection = page.eval_on_selector(
        "#selection rect", "r => ['x', 'y', 'width', 'height'].map(name => +r.getAttribute(name))"
    )
    x, y, width, height = selection
    box = [x, y, x + width, y + height]
    expected = [start[0] * scale, start[1] * scale, end[0] * scale, end[1] * scale]
    assert all(abs(a - b) <= scale + 1 for a, b in zip(box, expected, strict=True)), (box, expected)
    tokens = boxes_to_loc_tokens(box, (1600, 1200))
    assert page.get_attribute("#region-tokens", "data-tokens") == tokens
    page.screenshot(path=shots / "region-dragged.png", full_page=True)
    run = run_task(page, big, "<REGION_TO_CATEGORY>")
    assert run["sent"]["messages"][0]["content"][1]["text"] == "<REGION_TO_CATEGORY>" + tokens
    assert run["status"] == 200


WATCH_TEXT = """() => {
    window.seenTexts = [];
    const seen = records => records.forEach(r => r.addedNodes.forEach(n => window.seenTexts.push(n.textContent)));
    const options = {childList: true, characterData: true, subtree: true};
    new MutationObserver(seen).observe(document.querySelector('#answer-text'), options);
}"""


def test_a_text_task_streams_into_the_answer(page: Any, fake_server: LiveServer, photo: Path, shots: Path) -> None:
    open_console(page, fake_server)
    page.evaluate(WATCH_TEXT)
    run = run_task(page, photo, "<CAPTION>")
    assert run["sent"]["stream"] is True
    expected = describe(make_photo())
    assert page.inner_text("#answer-text") == expected
    seen = [text for text in page.evaluate("window.seenTexts") if text]
    # One update per streamed word, each the beginning of the answer: shown as it arrived, not at the end.
    assert len(set(seen)) == len(expected.split(" ")) and all(expected.startswith(text) for text in seen)
    raw = json.loads(page.inner_text("#raw-json"))
    assert raw["content"] == expected and raw["finish_reason"] == "stop" and raw["usage"]["completion_tokens"] > 0
    page.screenshot(path=shots / "caption-streamed.png", full_page=True)


def test_a_caption_streamed_from_the_tiny_model_is_its_whole_answer(
    page: Any, model_server: LiveServer, photo: Path
) -> None:
    open_console(page, model_server)
    run = run_task(page, photo, "<CAPTION>", tokens=12)
    assert run["sent"]["stream"] is True and run["status"] == 200
    whole = call(model_server.url, "POST", COMPLETIONS, json_body={**run["sent"], "stream": False})
    assert page.inner_text("#answer-text") == whole.json()["choices"][0]["message"]["content"]


def test_the_snippets_send_the_same_request(page: Any, fake_server: LiveServer, photo: Path) -> None:
    open_console(page, fake_server)
    run = run_task(page, photo, "<OD>")
    expected = run["response"].json()["result"]

    page.click("#snippets button[data-snippet=curl]")
    curl = page.inner_text("#snippet-code")
    out = subprocess.run(["bash", "-c", curl], cwd=photo.parent, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["result"] == expected, out.stderr

    page.click("#snippets button[data-snippet='OpenAI SDK']")
    sdk = page.inner_text("#snippet-code")
    out = subprocess.run([sys.executable, "-c", sdk], cwd=photo.parent, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == str(expected)

    # Text that shell quoting, printf formats and Python literals could each get wrong.
    tricky = "50% 'off' \"now\" back\\slash $HOME `x`"
    page.select_option("#task-form select[name=task]", "<OPEN_VOCABULARY_DETECTION>")
    page.fill("#task-form input[name=text_input]", tricky)
    run = run_task(page, photo, "<OPEN_VOCABULARY_DETECTION>")
    assert run["response"].json()["result"]["<OPEN_VOCABULARY_DETECTION>"]["bboxes_labels"] == [tricky]
    expected = run["response"].json()["result"]
    page.click("#snippets button[data-snippet=curl]")
    out = subprocess.run(
        ["bash", "-c", page.inner_text("#snippet-code")], cwd=photo.parent, capture_output=True, text=True, timeout=60
    )
    assert json.loads(out.stdout)["result"] == expected, out.stderr
    page.click("#snippets button[data-snippet='OpenAI SDK']")
    out = subprocess.run(
        [sys.executable, "-c", page.inner_text("#snippet-code")],
        cwd=photo.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.splitlines()[-1] == str(expected), out.stderr
    expected = run["response"].json()["result"]

    page.click("#snippets button[data-snippet='AI.run']")
    function = page.inner_text("#snippet-code")
    functions_dir = fake_server.services.settings.server.functions_dir
    (functions_dir / "try_it.py").write_text(function + "\n")
    reply = call(fake_server.url, "POST", "/try_it", body=photo.read_bytes(), headers={"Content-Type": "image/png"})
    assert reply.status == 200 and reply.json() == expected


def test_an_invoked_function_shows_its_log_lines_live(
    page: Any, fake_server: LiveServer, photo: Path, shots: Path
) -> None:
    open_console(page, fake_server)
    run_task(page, photo, "<OD>")  # the whole page in use, for the README's screenshot
    page.click("#function-list li[data-function=chatty] button")
    page.fill("#invoke-form input[name=query]", "word=bird")
    page.get_by_role("button", name="Invoke", exact=True).click()
    page.wait_for_selector("#invoke-result[data-status='200']")
    request_id = page.get_attribute("#invoke-result", "data-request-id")
    record = page.wait_for_selector(
        f"#invocations section[data-function=chatty] article[data-request-id='{request_id}']"
    )
    logs = record.inner_text()
    assert "chatty got bird with token [redacted]" in logs
    assert f"second line for {request_id}" in logs
    assert "200" in logs and "GET /chatty?word=bird" in logs

    # An invocation from outside the page (curl, another tab) appears too, in its own function's list.
    reply = call(fake_server.url, "GET", "/quiet", headers={"X-Request-Id": "from-outside-1"})
    assert reply.status == 200
    page.wait_for_selector("#invocations section[data-function=quiet] article[data-request-id='from-outside-1']")
    assert SECRET not in page.content()
    page.screenshot(path=shots / "console.png", full_page=True)
