"""The one piece of work every contender does: the same image, the same task, the same token counts.

The image is drawn here (no file, no download), a 1024x768 JPEG with gradients, shapes and text, so that the
server's decode and resize have real work and every run of the benchmark sees the same bytes.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = (1024, 768)  # width, height
TASK = "<CAPTION>"  # a text task: every contender decodes plain tokens, and the server may stream it
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Job:
    """One timed generation: ``max_new_tokens`` tokens with EOS ignored, greedy (1 beam) or beam search."""

    max_new_tokens: int
    num_beams: int

    @property
    def key(self) -> str:
        return f"tokens{self.max_new_tokens}_beams{self.num_beams}"

    def to_dict(self) -> dict[str, int]:
        return {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}


@cache
def jpeg_bytes() -> bytes:
    width, height = IMAGE_SIZE
    ys, xs = np.mgrid[0:height, 0:width]
    gradient = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) * 255 // (width + height)], axis=-1)
    image = Image.fromarray(gradient.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((80, 420, 460, 700), fill=(200, 30, 40), outline=(0, 0, 0), width=6)
    draw.ellipse((560, 120, 900, 460), fill=(30, 160, 70), outline=(255, 255, 255), width=6)
    draw.polygon([(600, 700), (760, 500), (960, 720)], fill=(240, 210, 20))
    for row in range(6):
        draw.text((80, 60 + row * 40), f"STOP 2024 Main St. line {row}", fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def image() -> Image.Image:
    """The decoded image, as a contender receives it."""
    decoded = Image.open(io.BytesIO(jpeg_bytes()))
    decoded.load()
    return decoded.convert("RGB")


def data_url() -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes()).decode("ascii")
