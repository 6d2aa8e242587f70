"""Fixtures of the hardening tests: the real server on the tiny model, behind loopback image hosts and a fake DNS.

The runtime tests' helpers (fakes.py, live_server.py) are shared: their folder goes on sys.path here, so this suite
also runs on its own (``pytest tests/hardening``).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from fakes import FakeResolver
from hardening_egress import EgressTripwire
from hardening_hosts import ALLOWED_ADDRESS, DNS, PRIVATE_ADDRESS, ImageHost, image_host
from hardening_server import EXAMPLES, FUNCTIONS, tiny_settings
from hardening_spec import Spec
from live_server import LiveServer, call, write_functions

from runtime.server.services import Services


@pytest.fixture(scope="session", autouse=True)
def egress() -> Iterator[EgressTripwire]:
    tripwire = EgressTripwire()
    patch = pytest.MonkeyPatch()
    tripwire.install(patch)
    yield tripwire
    patch.undo()
    assert not tripwire.blocked, f"connections to non-loopback addresses were attempted: {tripwire.blocked}"


@pytest.fixture(scope="session")
def public_host() -> Iterator[ImageHost]:
    """The image host the allow-list lets through, known to the fake DNS as images.example."""
    with image_host(ALLOWED_ADDRESS) as host:
        yield host


@pytest.fixture(scope="session")
def private_host() -> Iterator[ImageHost]:
    """An internal service on a loopback address outside the allow-list: it must never be reached."""
    with image_host(PRIVATE_ADDRESS) as host:
        yield host


@pytest.fixture(scope="session")
def hardening_functions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hello.py`` beside the example functions of functions/ (what users copy: they face the same input)."""
    folder = tmp_path_factory.mktemp("hardening-functions")
    shutil.copytree(EXAMPLES, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.md", ".env*"))
    return write_functions(folder, FUNCTIONS)


@pytest.fixture(scope="session")
def tiny_server(
    tiny_model_dir: Path, hardening_functions: Path, public_host: ImageHost, private_host: ImageHost
) -> Iterator[LiveServer]:
    """The real server on the tiny model, with the SSRF guard on: only 127.0.0.2 is allowed."""
    services = Services(tiny_settings(hardening_functions, tiny_model_dir), resolver=FakeResolver(DNS))
    with LiveServer(services) as live:
        yield live


@pytest.fixture(scope="session")
def spec(tiny_server: LiveServer) -> Spec:
    reply = call(tiny_server.url, "GET", "/openapi.json")
    assert reply.status == 200
    return Spec(reply.json())
