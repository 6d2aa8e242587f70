"""The OpenAPI document at /openapi.json is true: of the routes, of the errors, of the request schema, and of every
status the completions endpoint can answer with (each one produced here for real and checked against it)."""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fakes import FakeEngine, FakeResolver
from hardening_hosts import DNS, PUBLIC_NAME, ImageHost
from hardening_server import completion_body, tiny_settings
from hardening_spec import Spec, SpecMismatch
from live_server import LiveServer, Reply, call
from starlette.routing import Route

from runtime.console.access import CONSOLE_PREFIX
from runtime.errors import InferenceFailed
from runtime.server.openapi import COMPLETION_ERRORS, error_classes, openapi_document
from runtime.server.routes import FunctionRoute
from runtime.server.services import Services
from runtime.spec import request_schema

COMPLETIONS = "/v1/chat/completions"
TIMEOUT_S = 1.0
ENGINE_DELAY_S = 0.6  # under the invocation timeout: a request that queues behind one such request still fits


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine(max_new_tokens=16)


@pytest.fixture(scope="module")
def server(hardening_functions: Path, engine: FakeEngine, public_host: ImageHost) -> Iterator[LiveServer]:
    settings = tiny_settings(
        hardening_functions, Path("/models/fake"), invocation_timeout_s=TIMEOUT_S, max_concurrent=1, max_queued=1
    )
    # The image fetch must time out (504) before the request does (408).
    settings = dataclasses.replace(settings, media=dataclasses.replace(settings.media, fetch_timeout_s=TIMEOUT_S / 2))
    services = Services(settings, engine_loader=lambda path, options: engine, resolver=FakeResolver(DNS))
    with LiveServer(services) as live:
        yield live


@pytest.fixture(scope="module")
def document(server: LiveServer) -> dict[str, Any]:
    reply = call(server.url, "GET", "/openapi.json")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    return reply.json()


def test_the_served_document_is_built_from_the_servers_settings(server: LiveServer, document: dict[str, Any]) -> None:
    assert document == openapi_document(server.services.settings)
    assert document["openapi"] == "3.2.0"
    model = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]
    assert model["enum"] == server.services.registry.ids()
    schemathesis.openapi.from_dict(document)  # loads: a valid document to the fuzzer


def test_every_route_is_described_and_every_description_is_routed(server: LiveServer, document: dict[str, Any]) -> None:
    app = server.server.config.app
    routed = {
        route.path: {method.lower() for method in route.methods or ()} - {"head"}
        for route in app.routes
        # the console is a page for people, not part of the API this document describes (README)
        if isinstance(route, Route) and not isinstance(route, FunctionRoute) and route.path != CONSOLE_PREFIX
    }
    described = {path: set(operations) for path, operations in document["paths"].items()}
    assert routed == described


def test_every_error_is_in_the_envelope_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    error = schemas["Error"]["properties"]["error"]["properties"]
    for cls in error_classes():
        assert cls.code in error["code"]["enum"] and cls.type in error["type"]["enum"]
        by_status = schemas[f"Error{cls.status}"]["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
        assert cls.code in by_status, cls
    function_only = {405}  # a wrong method; function errors (404, 500, 408) share statuses with completions
    assert {cls.status for cls in error_classes()} - function_only <= set(COMPLETION_ERRORS)


def test_the_request_schema_is_the_bindings_with_the_servers_limits(
    server: LiveServer, document: dict[str, Any]
) -> None:
    schemas = copy.deepcopy(document["components"]["schemas"])
    request = schemas["ChatCompletionRequest"]
    limits = server.services.settings.limits
    assert request["required"] == ["model", "messages"]
    assert request["properties"]["max_tokens"]["maximum"] == limits.max_new_tokens
    assert request["properties"]["num_beams"]["maximum"] == limits.max_num_beams
    # Undo what the server adds; the rest must be the binding's schema, definitions and all.
    request["required"].remove("model")
    del request["description"], request["properties"]["model"]["enum"]
    for name in ("model", "max_tokens", "max_completion_tokens", "num_beams"):
        request["properties"][name].pop("description")
    expected = request_schema()
    for name in ("max_tokens", "max_completion_tokens", "num_beams"):
        request["properties"][name].pop("maximum")
        setting = "FLORENCE_MAX_NUM_BEAMS" if name == "num_beams" else "FLORENCE_MAX_NEW_TOKENS"
        assert request["properties"][name]["x-expected"].endswith(f"(the server's {setting})")
        request["properties"][name]["x-expected"] = expected["properties"][name]["x-expected"]
    expected.pop("$schema")
    definitions = expected.pop("definitions")
    assert _refs_to_definitions(request) == expected
    for name, definition in definitions.items():
        component = "".join(word.capitalize() for word in name.split("_"))
        assert _refs_to_definitions(schemas[component]) == definition


def _refs_to_definitions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _definition_ref(value) if key == "$ref" else _refs_to_definitions(value) for key, value in node.items()
        }
    if isinstance(node, list):
        return [_refs_to_definitions(item) for item in node]
    return node


def _definition_ref(ref: str) -> str:
    name = ref.removeprefix("#/components/schemas/")
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return f"#/definitions/{snake}"


def _post(server: LiveServer, body: Any = None, **kwargs: Any) -> Reply:
    return call(server.url, "POST", COMPLETIONS, json_body=completion_body() if body is None else body, **kwargs)


def _three_at_once(server: LiveServer) -> list[Reply]:
    """One running, one queued, one refused (max_concurrent 1, max_queued 1)."""
    replies: list[Reply] = []
    threads = [threading.Thread(target=lambda: replies.append(_post(server))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return replies


@pytest.mark.timeout(60)
def test_every_documented_status_is_real_and_matches(
    server: LiveServer, engine: FakeEngine, public_host: ImageHost, document: dict[str, Any]
) -> None:
    spec = Spec(document)
    seen: dict[int, Reply] = {}

    def check(reply: Reply) -> None:
        spec.check("POST", COMPLETIONS, reply.status, reply.headers, reply.body)
        seen.setdefault(reply.status, reply)

    check(_post(server))
    stream = _post(server, completion_body(stream=True, stream_options={"include_usage": True}))
    assert stream.headers["content-type"].startswith("text/event-stream")
    check(stream)
    check(_post(server, completion_body(text="<NOPE>")))
    check(_post(server, completion_body(model="gpt-4o")))
    check(call(server.url, "POST", COMPLETIONS, body=b"x" * 17_000_000))  # over the default 16 MiB
    check(call(server.url, "POST", COMPLETIONS, body=b"{}", headers={"Content-Type": "text/plain"}))
    check(_post(server, completion_body(url=public_host.url("/slow", PUBLIC_NAME))))
    engine.delay_s = ENGINE_DELAY_S
    try:
        for reply in _three_at_once(server):
            check(reply)
        engine.delay_s = TIMEOUT_S + 0.5
        check(_post(server))
    finally:
        engine.delay_s = 0.0
    for failure in (InferenceFailed("the decoder failed: injected"), RuntimeError("a bug, injected")):
        engine.fail_with = failure
        try:
            check(_post(server))
        finally:
            engine.fail_with = None
    server.services.state.draining = True
    try:
        check(_post(server))
    finally:
        server.services.state.draining = False
    assert set(seen) == {200, *COMPLETION_ERRORS}, sorted(seen)
    assert seen[429].headers["retry-after"] and seen[503].headers["retry-after"]


def test_the_checker_catches_a_document_that_lies(server: LiveServer, document: dict[str, Any]) -> None:
    reply = _post(server)
    lying = copy.deepcopy(document)
    lying["components"]["schemas"]["ChatCompletion"]["required"].append("system_fingerprint")
    with pytest.raises(SpecMismatch, match="system_fingerprint"):
        Spec(lying).check("POST", COMPLETIONS, reply.status, reply.headers, reply.body)
    error = _post(server, completion_body(text="<NOPE>"))
    lying = copy.deepcopy(document)
    lying["components"]["schemas"]["Error400"]["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"] = [
        "invalid_request"
    ]
    with pytest.raises(SpecMismatch, match="invalid_payload"):
        Spec(lying).check("POST", COMPLETIONS, error.status, error.headers, error.body)
    del lying["paths"][COMPLETIONS]["post"]["responses"]["400"]
    with pytest.raises(SpecMismatch, match="not described"):
        Spec(lying).check("POST", COMPLETIONS, error.status, error.headers, error.body)
