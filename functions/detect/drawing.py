"""Boxes and labels drawn over an image (a module of its own: folder functions may import their siblings)."""

import io
from typing import Any

from PIL import Image, ImageDraw, ImageOps

COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def draw_boxes(image_bytes: bytes, objects: list[dict[str, Any]]) -> bytes:
    """PNG bytes of the image with each object's box and label.

    Only called after the binding accepted the same bytes (format, byte and pixel limits), so decoding is safe.
    """
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes))).convert("RGB")
    canvas = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 200))
    for index, item in enumerate(objects):
        colour = COLOURS[index % len(COLOURS)]
        x1, y1, x2, y2 = item["box"]
        canvas.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=width)
        if item["label"]:
            left, top, right, bottom = canvas.textbbox((x1 + 2, y1), item["label"])
            canvas.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=colour)
            canvas.text((x1 + 2, y1), item["label"], fill="white")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
