"""Images to ``pixel_values``, as transformers' (slow) CLIPImageProcessor computes them, with Pillow and numpy.

CLIPImageProcessor converts a non-RGB image with ``Image.convert("RGB")`` (alpha is dropped, not composited),
resizes the uint8 image with Pillow (``reducing_gap=None``), rescales in float64 and casts to float32, then
normalizes in float32. After the resize every output value depends only on one uint8 and its channel, so the
rescale and normalization are precomputed once into a 3 x 256 float32 table holding exactly those values; a batch
is then a resize and a table lookup per image.

Deliberate differences from transformers:
- Every image is converted to RGB, whatever ``do_convert_rgb`` says. The released Florence-2 config leaves it
  null, so transformers passes grayscale or RGBA arrays on and fails on them; the model needs three channels.
- transformers guesses the channel axis from the array and takes an image 1 or 3 pixels high for channels-first,
  then fails or returns garbage. Here a PIL image is always height x width x channels; the tests compare such
  images with transformers told ``input_data_format="channels_last"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from runtime.errors import translate
from runtime.florence2.configs import ImageConfig


class ImagePreprocessor:
    def __init__(self, config: ImageConfig) -> None:
        self.config = config
        self._table = _value_table(config)

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of every preprocessed image."""
        return self.config.height, self.config.width

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 pixel_values [B, 3, H, W]."""
        height, width = self.output_size
        out = np.empty((len(images), 3, height, width), dtype=np.float32)
        for i, image in enumerate(images):
            try:  # a lazily opened image decodes here, so damaged data surfaces here too
                resized = to_rgb(image).resize((width, height), resample=self.config.resample, reducing_gap=None)
            except (OSError, ValueError, SyntaxError, EOFError) as exc:
                raise translate(exc, stage="image_decode") from exc
            for channel, band in enumerate(resized.split()):
                # uint8 indices cannot leave the 256-entry table, so bounds checks are skipped (mode='clip').
                np.take(self._table[channel], np.asarray(band), out=out[i, channel], mode="clip")
        return out


def to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _value_table(config: ImageConfig) -> np.ndarray:
    values = np.arange(256, dtype=np.uint8)
    if config.rescale_factor is not None:
        scaled = (values.astype(np.float64) * config.rescale_factor).astype(np.float32)
    else:
        scaled = values.astype(np.float32)
    table = np.repeat(scaled[None, :], 3, axis=0)
    if config.mean is not None and config.std is not None:
        mean = np.array(config.mean, dtype=np.float32)[:, None]
        std = np.array(config.std, dtype=np.float32)[:, None]
        table = (table - mean) / std
    return np.ascontiguousarray(table, dtype=np.float32)
