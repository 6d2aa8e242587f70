"""Caption an image.

    GET  /caption?url=https://example.com/photo.jpg[&detail=1|2][&max_tokens=N]
    POST /caption[?detail=1|2]   with the image bytes as the body (Content-Type: image/jpeg, image/png ...)

-> {"caption": "...", "task": "<CAPTION>", "usage": {...}}. detail=1 asks for <DETAILED_CAPTION>, 2 for
<MORE_DETAILED_CAPTION>. The model id comes from env.MODEL (functions/.env), defaulting to the platform's name.
"""

from typing import Any

from starlette.requests import Request

from runtime.functions.helpers import InvalidRequest, chat, generation_options, image_url_of, length_warning

DETAIL_TASKS = {"0": "<CAPTION>", "1": "<DETAILED_CAPTION>", "2": "<MORE_DETAILED_CAPTION>"}


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any]:
    task = DETAIL_TASKS.get(request.query_params.get("detail", "0"))
    if task is None:
        raise InvalidRequest("detail must be 0, 1 or 2", param="detail")
    payload = {"messages": chat(await image_url_of(request), task), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)
    caption = answer["choices"][0]["message"]["content"]
    return {"caption": caption, "task": task, "usage": answer["usage"], **length_warning(answer)}
