"""End-to-end fixtures: the real server on the tiny random-weight model, an image server on 127.0.0.1, and a
functions folder holding the examples plus deliberately broken functions. One server for the whole session."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    EXTRA_FUNCTIONS,
    PROJECT_ENV,
    REPO,
    CountingLoader,
    ImageServer,
    QuietHandler,
    e2e_settings,
    make_photo,
)
from live_server import LiveServer

from runtime.server.services import Services


@pytest.fixture(scope="session")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    folder = tmp_path_factory.mktemp("images")
    photo = make_photo()
    photo.save(folder / "photo.jpg", quality=90)
    photo.save(folder / "photo.png")
    (folder / "page.html").write_text("<html>not an image</html>")
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield ImageServer(url=f"http://127.0.0.1:{httpd.server_address[1]}", folder=folder)
    httpd.shutdown()


@pytest.fixture(scope="session")
def e2e_functions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("e2e-functions") / "functions"
    shutil.copytree(REPO / "functions", folder, ignore=shutil.ignore_patterns("__pycache__", ".env"))
    for name, code in EXTRA_FUNCTIONS.items():
        (folder / name).write_text(code)
    (folder / ".env").write_text(PROJECT_ENV)
    return folder


@pytest.fixture(scope="session")
def engine_loader() -> CountingLoader:
    return CountingLoader()


@pytest.fixture(scope="session")
def e2e_server(tiny_model_dir: Path, e2e_functions: Path, engine_loader: CountingLoader) -> Iterator[LiveServer]:
    services = Services(e2e_settings(e2e_functions, tiny_model_dir), engine_loader=engine_loader)  # type: ignore[arg-type]
    with LiveServer(services) as live:
        yield live
