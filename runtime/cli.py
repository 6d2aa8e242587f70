"""``python -m runtime serve | invoke | settings``.

    serve    [--functions DIR] [--model ID[,ID...]=MODEL_DIR ...] [--host H] [--port P] [--reload]
             [--ray-replicas N [--ray-address ADDR]]
    invoke   NAME [--data JSON | --image FILE] [--query KEY=VALUE ...] [--method M] [--path /SUB/PATH]
             [--functions DIR] [--model ...]
    settings   print the FLORENCE_* settings table (markdown)

Flags win over FLORENCE_* environment variables, which win over the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from runtime.config import SETTINGS_DOC, Settings, SettingsError, parse_models


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "settings":
        print(settings_table())
        return 0
    try:
        settings = _settings(args)
        _check_models(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from runtime.server.logs import configure_logging

    configure_logging(settings.server.log_level)
    if args.command == "serve":
        return _serve(settings)
    try:
        call = _invocation(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_invoke(settings, args.name, call))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--functions", type=Path, help="edge functions folder (FLORENCE_FUNCTIONS_DIR)")
    common.add_argument(
        "--model",
        action="append",
        metavar="ID[,ID...]=MODEL_DIR",
        help="a model folder and the ids it answers to; repeatable (FLORENCE_MODELS)",
    )
    serve = commands.add_parser("serve", parents=[common], help="serve functions and the OpenAI-compatible API")
    serve.add_argument("--host", help="address to listen on (FLORENCE_HOST)")
    serve.add_argument("--port", type=int, help="port (FLORENCE_PORT)")
    serve.add_argument("--reload", action="store_true", default=None, help="pick up edited functions (FLORENCE_RELOAD)")
    serve.add_argument(
        "--ray-replicas",
        type=int,
        metavar="N",
        help="serve on Ray Serve with N model replicas per model (FLORENCE_RAY_REPLICAS; needs the ray extra)",
    )
    serve.add_argument(
        "--ray-address", metavar="ADDR", help="join this Ray cluster instead of starting one (FLORENCE_RAY_ADDRESS)"
    )
    invoke = commands.add_parser("invoke", parents=[common], help="call one function once and print its response")
    invoke.add_argument("name", help="function name (functions/<name>.py or functions/<name>/index.py)")
    body = invoke.add_mutually_exclusive_group()
    body.add_argument("--data", help="JSON request body (the request is a POST when given)")
    body.add_argument(
        "--image",
        type=Path,
        metavar="FILE",
        help="POST this file as the body, with its media type (what image_url_of and uploaded_image read)",
    )
    invoke.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a query parameter, percent-encoded here (a data: URL or a caption as typed); repeatable",
    )
    invoke.add_argument("--method", help="HTTP method (default: POST with --data or --image, GET without)")
    invoke.add_argument(
        "--path", default="", help="path under the function, with an already encoded query string if any: /sub?x=1"
    )
    commands.add_parser("settings", help="print the settings table")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    models = parse_models(args.model) if args.model else None
    server = {"functions_dir": args.functions}
    ray: dict[str, Any] = {}
    if args.command == "serve":
        server |= {"host": args.host, "port": args.port, "reload": args.reload}
        if args.ray_replicas is not None and args.ray_replicas < 1:
            raise SettingsError(
                f"--ray-replicas {args.ray_replicas}: give at least 1 (or leave it out to serve without Ray)"
            )
        ray = {"replicas": args.ray_replicas, "address": args.ray_address}
    return settings.with_overrides(server=server, models=models, ray=ray)


def _check_models(settings: Settings) -> None:
    for spec in settings.models:
        if not (spec.path / "config.json").is_file():
            raise SettingsError(
                f"model folder {spec.path} does not exist or holds no config.json; build the tiny one with "
                "`make tiny`, or export a checkpoint with `make export MODEL=... OUT=...`"
            )


def _serve(settings: Settings) -> int:
    if settings.ray.address and not settings.ray.enabled:
        print("error: --ray-address needs --ray-replicas N (the model replicas to deploy)", file=sys.stderr)
        return 2
    if settings.ray.enabled:
        from runtime.cluster.launch import RayMissing, serve_on_ray

        try:
            return serve_on_ray(settings)
        except RayMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 3
    from runtime.server.serve import build_server
    from runtime.server.services import Services

    services = Services(settings)
    build_server(services).run()
    return 1 if services.state.load_error else 0


@dataclass(frozen=True)
class _Invocation:
    """The request ``invoke`` sends."""

    method: str
    sub_path: str  # under the function's route
    query: str  # percent-encoded
    body: bytes
    media_type: str


def _invocation(args: argparse.Namespace) -> _Invocation:
    body, media_type = b"", "application/json"
    if args.data is not None:
        try:
            json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--data is not valid JSON: {exc}") from None
        body = args.data.encode()
    elif args.image is not None:
        try:
            body = args.image.read_bytes()
        except OSError as exc:
            raise SettingsError(f"--image {args.image}: {exc.strerror or exc}") from None
        # the binding tells image formats apart by their bytes; the type only travels in the data: URL
        media_type = mimetypes.guess_type(args.image.name)[0] or "application/octet-stream"
    pairs: list[tuple[str, str]] = []
    for item in args.query:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise SettingsError(f"--query {item!r}: give KEY=VALUE")
        pairs.append((key, value))
    sub_path, _, query = args.path.partition("?")
    query = "&".join(part for part in (query, urlencode(pairs)) if part)
    sends_body = args.data is not None or args.image is not None
    method = (args.method or ("POST" if sends_body else "GET")).upper()
    return _Invocation(method, sub_path, query, body, media_type)


async def _invoke(settings: Settings, name: str, call: _Invocation) -> int:
    from starlette.requests import Request

    from runtime.server.errors import as_runtime_error, error_response
    from runtime.server.services import Services

    services = Services(settings)
    services.binding.bind_loop(asyncio.get_running_loop())
    try:
        await services.load_models()
        body = call.body
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": call.method,
            "scheme": "http",
            "server": ("localhost", 0),
            "client": ("127.0.0.1", 0),
            "root_path": "",
            "path": f"/{name}{call.sub_path}",
            "raw_path": f"/{name}{call.sub_path}".encode(),
            "query_string": call.query.encode(),
            "headers": [
                (b"content-type", call.media_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        request_id = uuid.uuid4().hex
        try:
            invocation = await services.runner.invoke(name, Request(scope, receive), request_id)
            response = invocation.response_then_pending(settings.limits.invocation_timeout_s)
        except Exception as exc:  # printed as the server would answer it
            response = error_response(as_runtime_error(exc))
        status, output = await _render(response, scope)
        print(f"HTTP {status}", file=sys.stderr)
        sys.stdout.buffer.write(output)
        if output and not output.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
        return 0 if status < 400 else 1
    finally:
        await services.close()


async def _render(response: Any, scope: dict[str, Any]) -> tuple[int, bytes]:
    """Run a Starlette response against an in-memory ASGI send; its background work runs too."""
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # never disconnects
        return {}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await response(scope, receive, send)
    return status, b"".join(chunks)


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{doc.name}` | `{doc.default}` | {doc.meaning} |" for doc in SETTINGS_DOC]
    return "\n".join(lines)
