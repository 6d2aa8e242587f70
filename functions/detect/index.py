"""Object detection, as JSON boxes or as the image with the boxes drawn.

    POST /detect                 image bytes as the body -> {"objects": [{"label": "car", "box": [x1, y1, x2, y2]}]}
    POST /detect/annotated.png   image bytes as the body -> the same image (PNG) with the boxes and labels drawn
    GET  /detect?url=https://... -> JSON (drawing needs the uploaded bytes)

?task=dense asks for <DENSE_REGION_CAPTION> (descriptions instead of categories), ?task=proposals for
<REGION_PROPOSAL> (boxes without labels). Boxes are in pixels of the image as shown (EXIF orientation applied).
"""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runtime.functions.helpers import InvalidRequest, chat, generation_options, image_url_of

from .drawing import draw_boxes

TASKS = {"objects": "<OD>", "dense": "<DENSE_REGION_CAPTION>", "proposals": "<REGION_PROPOSAL>"}


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any] | Response:
    task = TASKS.get(request.query_params.get("task", "objects"))
    if task is None:
        raise InvalidRequest(f"task must be one of {', '.join(TASKS)}", param="task")
    annotated = request.url.path.rstrip("/").endswith("/annotated.png")
    if annotated and not (request.method == "POST" and await request.body()):
        raise InvalidRequest("POST the image bytes to /detect/annotated.png", param="body")
    payload = {"messages": chat(await image_url_of(request), task), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)
    found = answer["result"][task]
    labels = found.get("labels") or [""] * len(found["bboxes"])
    objects = [
        {"label": label, "box": [round(v, 1) for v in box]} for label, box in zip(labels, found["bboxes"], strict=True)
    ]
    if annotated:
        return Response(draw_boxes(await request.body(), objects), media_type="image/png")
    return {"task": task, "objects": objects, "usage": answer["usage"]}
