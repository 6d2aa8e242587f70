"""The console in a real browser (headless Chromium): the page loads without errors, an <OD> answer is drawn at the
coordinates the API returned, a dragged region becomes the loc tokens sent, text tasks stream, functions are
invoked and their log lines appear live. Screenshots of each state go to the test's temporary folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from console_support import SECRET
from live_server import LiveServer

from runtime.florence2 import boxes_to_loc_tokens

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
    assert functions == ["chatty", "quiet", "raising"]
    page.screenshot(path=shots / "loaded.png", full_page=True)
