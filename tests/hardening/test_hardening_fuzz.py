"""Schemathesis against the served OpenAPI document, over real HTTP.

Every response must match the document (status, headers, media type, body, each SSE event) and none may be a
5xx; bodies that break the schema must get a 4xx; methods a path does not take must get 405 with Allow. Two
servers are fuzzed: one on the fake engine, where ``FUZZ_EXAMPLES`` examples per operation (500 by default, what
CI runs; ``make fuzz`` runs 2000) exercise the HTTP layer, validation and the image path quickly; and one on the
tiny model, where ``FUZZ_MODEL_EXAMPLES`` (100; ``make fuzz``: 500) check real generations and post-processing
against the document (each costs a vision-encoder pass, some 0.2 s on two cores).

Generated image URLs never become traffic: the servers' fetcher is a double that parses the URL and vets its host
with the real SSRF guard (over a fake DNS that gives every name a public address), then answers with a canned photo
instead of connecting. So most generated URLs reach the engine, and none leaves the machine.

Not checked: that every schema-valid body succeeds (schemathesis' positive_data_acceptance). A body can be valid
JSON of the right shape and still carry an image URL that is not an image; the server answers those 4xx, as
documented.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fakes import FakeEngine
from hardening_hosts import PHOTO_JPEG
from hardening_server import tiny_settings
from hardening_spec import Spec
from hypothesis import HealthCheck, settings
from live_server import LiveServer
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from runtime.errors import UnsupportedUrl
from runtime.media.addresses import IPAddress
from runtime.media.fetch import parse_url
from runtime.media.guard import AddressGuard
from runtime.server.services import Services

pytestmark = pytest.mark.slow  # minutes: schemathesis examples on the fake engine and on the tiny model

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
FUZZ_MODEL_EXAMPLES = int(os.environ.get("FUZZ_MODEL_EXAMPLES", "100"))
COMPLETIONS = "POST /v1/chat/completions"
MAX_NEW_TOKENS = 8


class EveryNameIsPublic:
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.215.14")]  # a public address; nothing is ever sent to it


class GuardedCannedFetcher:
    """ImageFetcher up to the connection (URL parsing, scheme, the SSRF guard); then a canned photo."""

    def __init__(self) -> None:
        self._guard = AddressGuard(EveryNameIsPublic())

    async def fetch(self, url: str) -> bytes:
        parsed = parse_url(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UnsupportedUrl(f"not an http(s) URL with a host: {url!r}")
        await self._guard.addresses_for(parsed.host, parsed.port or 0)
        return PHOTO_JPEG

    async def close(self) -> None:
        return None


@schemathesis.check
def event_stream_order(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A stream is chunks, then [DONE]; or chunks, then one error event that ends it."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    Spec(case.operation.schema.raw_schema).check_events(response.content)
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    event_stream_order,
]


class Tally:
    def __init__(self) -> None:
        self.cases: Counter[str] = Counter()
        self.completions: Counter[int] = Counter()

    def record(self, case: schemathesis.Case, status: int) -> None:
        label = f"{case.method} {case.path}"
        self.cases[label] += 1
        if label == COMPLETIONS:
            self.completions[status] += 1

    def assert_ran(self, examples: int) -> None:
        assert self.cases[COMPLETIONS] >= examples, self.cases
        assert self.completions[200] > 0, f"no generated request reached the engine: {self.completions}"
        print(f"\n{sum(self.cases.values())} requests; completions answered {dict(sorted(self.completions.items()))}")


FAKE, MODEL = Tally(), Tally()


def _fetcher_double_services(settings_: object, **seams: object) -> Services:
    return Services(settings_, fetcher=GuardedCannedFetcher(), **seams)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fake_engine_server(hardening_functions: Path) -> Iterator[LiveServer]:
    settings_ = tiny_settings(hardening_functions, Path("/models/fake"), max_new_tokens=MAX_NEW_TOKENS)
    engine = FakeEngine(max_new_tokens=MAX_NEW_TOKENS)
    with LiveServer(_fetcher_double_services(settings_, engine_loader=lambda path, options: engine)) as live:
        yield live


@pytest.fixture(scope="module")
def tiny_model_server(tiny_model_dir: Path, hardening_functions: Path) -> Iterator[LiveServer]:
    settings_ = tiny_settings(hardening_functions, tiny_model_dir, max_new_tokens=MAX_NEW_TOKENS, max_num_beams=2)
    with LiveServer(_fetcher_double_services(settings_)) as live:
        yield live


@pytest.fixture(scope="module")
def fake_engine_api(fake_engine_server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fake_engine_server.url}/openapi.json")


@pytest.fixture(scope="module")
def tiny_model_api(tiny_model_server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{tiny_model_server.url}/openapi.json")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32 reads Node._nodeid, which pytest 9.2 renamed; it only uses it to label subtests.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


fake_engine_schema = schemathesis.pytest.from_fixture("fake_engine_api")
tiny_model_schema = schemathesis.pytest.from_fixture("tiny_model_api")
SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck)}


@pytest.mark.timeout(1800)
@fake_engine_schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, **SETTINGS)
def test_fuzz_on_the_fake_engine(case: schemathesis.Case, fake_engine_server: LiveServer) -> None:
    response = case.call_and_validate(base_url=fake_engine_server.url, checks=CHECKS, timeout=60)
    FAKE.record(case, response.status_code)


def test_fuzz_on_the_fake_engine_ran_its_examples() -> None:
    FAKE.assert_ran(FUZZ_EXAMPLES)


@pytest.mark.timeout(3600)
@tiny_model_schema.parametrize()
@settings(max_examples=FUZZ_MODEL_EXAMPLES, **SETTINGS)
def test_fuzz_on_the_tiny_model(case: schemathesis.Case, tiny_model_server: LiveServer) -> None:
    response = case.call_and_validate(base_url=tiny_model_server.url, checks=CHECKS, timeout=60)
    MODEL.record(case, response.status_code)


def test_fuzz_on_the_tiny_model_ran_its_examples() -> None:
    MODEL.assert_ran(FUZZ_MODEL_EXAMPLES)
