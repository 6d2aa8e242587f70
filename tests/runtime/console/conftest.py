"""Fixtures of the console tests: servers on loopback (the fake engine, and the tiny exported model), a photo, and
headless Chromium from Debian's ``chromium`` package driven by Playwright (its own browser download is not used).

Without chromium or Playwright the browser tests skip, saying why; under CI (``CI=true``) they fail instead, as
``.ci/run`` installs both.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import CONSOLE_FUNCTIONS, PROJECT_ENV, BrowserErrors, fake_settings, make_photo
from fakes import FakeEngine
from live_server import LiveServer, write_functions

from runtime.config import Limits, MediaSettings, ModelSpec, ServerSettings, Settings
from runtime.server.services import Services

VIEWPORT = {"width": 1280, "height": 1000}


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}; CI must run the browser tests (.ci/run installs chromium and playwright)")
    pytest.skip(f"{what}; the console's browser tests need it (CI installs it)")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("Debian's chromium is not installed (apt-get install chromium)")
    return str(path)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Module-scoped: Playwright's sync API runs an event loop in this thread while it is open, and the async tests
    of later modules need the thread without one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; the test fails if the page logs a console error or raises."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors = BrowserErrors.watch(page)
    yield page
    context.close()
    assert not errors.messages, f"the page logged errors: {errors.messages}"


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    make_photo().save(path)
    return path


@pytest.fixture(scope="module")
def image_url(photo: Path) -> Iterator[str]:
    """The photo served over HTTP on 127.0.0.1, for the pasted-URL path."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(photo.parent)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{photo.name}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def functions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_functions(tmp_path_factory.mktemp("console-functions"), CONSOLE_FUNCTIONS)
    (folder / ".env").write_text(PROJECT_ENV)
    return folder


@pytest.fixture(scope="module")
def fake_server(functions_dir: Path) -> Iterator[LiveServer]:
    """The real server on the fake engine, whose answers are known (two boxes for <OD>, a polygon ...)."""
    engine = FakeEngine(random_weights=True, max_new_tokens=64)
    services = Services(fake_settings(functions_dir), engine_loader=lambda path, settings: engine)
    with LiveServer(services) as live:
        yield live


@pytest.fixture(scope="module")
def model_server(tiny_model_dir: Path, functions_dir: Path) -> Iterator[LiveServer]:
    """The real server on the tiny exported model."""
    settings = Settings(
        server=ServerSettings(functions_dir=functions_dir, reload=True),
        limits=Limits(invocation_timeout_s=30, max_new_tokens=12, max_num_beams=2),
        media=MediaSettings(max_image_bytes=2_000_000),
        models=(ModelSpec(ids=("microsoft-florence-2-large",), path=tiny_model_dir),),
    )
    with LiveServer(Services(settings)) as live:
        yield live


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a test writes its screenshots (kept with pytest's temporary folders)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder
