"""Ask about a region of an image given in pixels.

    POST /region?box=x1,y1,x2,y2[&task=description|category|segmentation][&max_tokens=N]   image bytes as the body

-> {"task": "<REGION_TO_DESCRIPTION>", "box": [...], "answer": "..."} (segmentation answers with polygons:
{"polygons": [[[x, y, ...]]], "labels": [...]}). The box is turned into Florence-2's location tokens (0..999 across
the image), which is why the function needs the image itself rather than a URL.
"""

from typing import Any

from starlette.requests import Request

from runtime.florence2 import boxes_to_loc_tokens
from runtime.functions.helpers import InvalidRequest, box_param, chat, generation_options, uploaded_image

TASKS = {
    "description": "<REGION_TO_DESCRIPTION>",
    "category": "<REGION_TO_CATEGORY>",
    "segmentation": "<REGION_TO_SEGMENTATION>",
}


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any]:
    task = TASKS.get(request.query_params.get("task", "description"))
    if task is None:
        raise InvalidRequest(f"task must be one of {', '.join(TASKS)}", param="task")
    # The binding's own checks (bytes, pixels, format) before the size is trusted: a 413 or 415, never a 500.
    image = await uploaded_image(request, env)
    box = box_param(request, image.size)
    text = task + boxes_to_loc_tokens(box, image.size)
    payload = {"messages": chat(image.url, text), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)
    return {"task": task, "box": box, "answer": answer["result"][task], "usage": answer["usage"]}
