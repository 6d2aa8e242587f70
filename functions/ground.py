"""Phrase grounding: find each phrase of a caption in the image.

    GET  /ground?url=https://...&caption=A green car parked in front of a door[&max_tokens=N]
    POST /ground?caption=...   with the image bytes as the body

-> {"caption": "...", "phrases": [{"phrase": "A green car", "box": [x1, y1, x2, y2]}, ...]}; a phrase found in
several places appears once per box.
"""

from typing import Any

from starlette.requests import Request

from runtime.functions.helpers import InvalidRequest, chat, generation_options, image_url_of

TASK = "<CAPTION_TO_PHRASE_GROUNDING>"


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any]:
    caption = request.query_params.get("caption", "").strip()
    if not caption:
        raise InvalidRequest("give the caption to ground: ?caption=A green car ...", param="caption")
    payload = {"messages": chat(await image_url_of(request), TASK + caption), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)
    found = answer["result"][TASK]
    phrases = [
        {"phrase": label, "box": [round(v, 1) for v in box]}
        for label, box in zip(found["labels"], found["bboxes"], strict=True)
    ]
    return {"caption": caption, "phrases": phrases, "usage": answer["usage"]}
