"""Read the text in an image, with the region of each line.

    GET  /ocr?url=https://...[&max_tokens=N]      or      POST /ocr   with the image bytes as the body

-> {"text": "all lines, one per line", "regions": [{"text": "...", "quad": [x1, y1, x2, y2, x3, y3, x4, y4]}]}
Quadrilaterals are in pixels of the image, corners clockwise from the top left. An answer that reached its token
limit carries a "warning": a line whose region was cut off is dropped, so the text may be short or empty.
"""

from typing import Any

from starlette.requests import Request

from runtime.functions.helpers import chat, generation_options, image_url_of, length_warning

TASK = "<OCR_WITH_REGION>"


async def fetch(request: Request, env: Any, ctx: Any) -> dict[str, Any]:
    payload = {"messages": chat(await image_url_of(request), TASK), **generation_options(request)}
    answer = await AI.run(env.get("MODEL", "microsoft-florence-2-large"), payload)
    found = answer["result"][TASK]
    regions = [
        {"text": text, "quad": [round(v, 1) for v in quad]}
        for text, quad in zip(found["labels"], found["quad_boxes"], strict=True)
    ]
    text = "\n".join(region["text"] for region in regions)
    return {"text": text, "regions": regions, "usage": answer["usage"], **length_warning(answer)}
