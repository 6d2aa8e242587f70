"""``POST /v1/chat/completions`` and ``GET /v1/models``: HTTP in and out, nothing else."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runtime.errors import UnsupportedMediaType
from runtime.openai.serving import OpenAIServing, server_timing
from runtime.route_table import COMPLETIONS, MODELS, route
from runtime.untrusted import parse_json, quote

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"the request body must be application/json, not {quote(content_type)}")
    body = await request.body()
    # Off the event loop: decoding and checking a body of several megabytes takes a while.
    return await asyncio.to_thread(parse_json, body)


def openai_routes(serving: OpenAIServing) -> list[Route]:
    async def chat_completions(request: Request) -> Response:
        answer, timings = await serving.create_chat_completion(await read_json(request))
        if isinstance(answer, dict):
            return JSONResponse(answer, headers={"Server-Timing": server_timing(timings)} if timings else None)
        return StreamingResponse(answer, media_type="text/event-stream", headers=SSE_HEADERS)

    async def models(request: Request) -> Response:
        return JSONResponse(serving.list_models())

    return [route(COMPLETIONS, chat_completions), route(MODELS, models)]
