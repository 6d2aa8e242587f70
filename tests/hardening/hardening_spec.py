"""Checking real responses against the served OpenAPI document: status, headers, media type, body, SSE events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = "#/components/schemas/"


class SpecMismatch(AssertionError):
    pass


class Spec:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def validator(self, schema: Mapping[str, Any]) -> Draft202012Validator:
        # The components travel with the schema so that its "#/components/..." references resolve.
        return Draft202012Validator({**schema, "components": self.document["components"]})

    def errors(self, schema: Mapping[str, Any], instance: Any) -> list[str]:
        return [f"{list(e.absolute_path)}: {e.message[:300]}" for e in self.validator(schema).iter_errors(instance)]

    def check(self, method: str, path: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Raise SpecMismatch unless the response is one the document describes for this operation."""
        operation = self.document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            raise SpecMismatch(f"{method} {path} is not described")
        response = operation["responses"].get(str(status))
        if response is None:
            raise SpecMismatch(f"{method} {path} answered {status}, which is not described: {body[:300]!r}")
        lowered = {name.lower(): value for name, value in headers.items()}
        for name, header in response.get("headers", {}).items():
            value = lowered.get(name.lower())
            if value is None:
                if header.get("required"):
                    raise SpecMismatch(f"{method} {path} {status}: header {name} is missing")
                continue
            if problems := self.errors(header["schema"], value):
                raise SpecMismatch(f"{method} {path} {status}: header {name}={value!r}: {problems}")
        media_type = lowered.get("content-type", "").split(";", 1)[0].strip()
        content = response.get("content", {})
        if media_type not in content:
            raise SpecMismatch(f"{method} {path} {status}: content type {media_type!r} not in {sorted(content)}")
        if media_type == "application/json":
            if problems := self.errors(content[media_type]["schema"], json.loads(body)):
                raise SpecMismatch(f"{method} {path} {status}: {problems}; body {body[:500]!r}")
        elif media_type == "text/event-stream":
            self.check_events(body)

    def check_events(self, body: bytes) -> None:
        """Every event is a ChatCompletionChunk, or one Error object that ends the stream; [DONE] ends the rest."""
        events = [frame for frame in body.decode().split("\n\n") if frame]
        if not events:
            raise SpecMismatch("an empty event stream")
        for index, frame in enumerate(events):
            if not frame.startswith("data: "):
                raise SpecMismatch(f"event {index} is not a data event: {frame[:200]!r}")
            data = frame.removeprefix("data: ")
            last = index == len(events) - 1
            if data == "[DONE]":
                if not last:
                    raise SpecMismatch("[DONE] before the end of the stream")
                continue
            event = json.loads(data)
            if "error" in event:
                if not last:
                    raise SpecMismatch("an error event that does not end the stream")
                if problems := self.errors({"$ref": SCHEMAS + "Error"}, event):
                    raise SpecMismatch(f"error event {index}: {problems}")
                continue
            if last:
                raise SpecMismatch("the stream ends without [DONE] or an error")
            if problems := self.errors({"$ref": SCHEMAS + "ChatCompletionChunk"}, event):
                raise SpecMismatch(f"event {index}: {problems}; {data[:300]}")
