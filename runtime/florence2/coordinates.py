"""Florence-2's location bins: 1000 per axis, ``<loc_0>`` ... ``<loc_999>``, to and from pixels.

The arithmetic is Florence2PostProcessor's, bit for bit: it runs on float32 tensors (``torch.tensor`` of Python
numbers, then ``+ 0.5`` and ``* (size / 1000)`` with the scale rounded to float32) and ends in ``.int()``, which
truncates toward zero. numpy float32 gives the same roundings. Where ``.int()`` overflows (bins far beyond 999,
reachable only when the model spells ``<loc_123456789>`` out of ordinary characters), torch on x86 yields
-2147483648; we write that value explicitly so every platform agrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from runtime.errors import InvalidTaskInput

BINS = 1000
_INT32_MIN = -(2**31)
_INT64_MAX = 2**63 - 1


def _scale(image_size: tuple[int, int]) -> np.ndarray:
    width, height = image_size
    return np.array([width / BINS, height / BINS], dtype=np.float32)


def dequantize(bins: Sequence[int], image_size: tuple[int, int]) -> list[int]:
    """Bin centres in pixels of an image of (width, height); ``bins`` alternate x and y (an even count)."""
    if all(0 <= b < BINS for b in bins):  # what the model's <loc_0> ... <loc_999> tokens give: a table lookup
        xs, ys = _centres(tuple(image_size))
        return [ys[b] if i % 2 else xs[b] for i, b in enumerate(bins)]
    return _dequantize(bins, image_size)


@lru_cache(maxsize=256)
def _centres(image_size: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Every bin's centre on both axes of one image size."""
    pairs = _dequantize(np.repeat(np.arange(BINS), 2).tolist(), image_size)
    return pairs[0::2], pairs[1::2]


def _dequantize(bins: Sequence[int], image_size: tuple[int, int]) -> list[int]:
    if not bins:
        return []
    # Larger Python ints do not fit a tensor (torch raises); any value past int64 lands on the overflow value anyway.
    values = np.array([min(b, _INT64_MAX) for b in bins], dtype=np.int64).astype(np.float32).reshape(-1, 2)
    centres = ((values + np.float32(0.5)) * _scale(image_size)).ravel()
    fits = centres < 2**31  # False for NaN too
    out = np.full(centres.shape, _INT32_MIN, dtype=np.int64)
    out[fits] = centres[fits].astype(np.int64)  # truncation toward zero, like .int()
    return out.tolist()


def quantize(coords: Sequence[float], image_size: tuple[int, int]) -> list[int]:
    """Pixels to bins (``floor(v / (size / 1000))`` clamped to 0..999); ``coords`` alternate x and y."""
    values = np.asarray(coords, dtype=np.float32).reshape(-1, 2)
    bins = np.clip(np.floor(values / _scale(image_size)), 0, BINS - 1)
    return bins.astype(np.int64).ravel().tolist()


def boxes_to_loc_tokens(box_xyxy_pixels: Sequence[float], image_size: tuple[int, int]) -> str:
    """A pixel box [x1, y1, x2, y2] on an image of (width, height) as ``<loc_x1><loc_y1><loc_x2><loc_y2>``.

    The same quantization as ``Florence2PostProcessor.quantize``; use it to build region inputs such as
    ``"<REGION_TO_CATEGORY>" + boxes_to_loc_tokens(box, image.size)``.
    """
    box = list(box_xyxy_pixels)
    if len(box) != 4:
        raise InvalidTaskInput(f"a box needs four numbers [x1, y1, x2, y2], got {len(box)}")
    width, height = image_size
    if width <= 0 or height <= 0:
        raise InvalidTaskInput(f"image size must be positive (width, height), got {image_size!r}")
    if not np.all(np.isfinite(np.asarray(box, dtype=np.float64))):
        raise InvalidTaskInput(f"box coordinates must be finite numbers, got {box!r}")
    return "".join(f"<loc_{b}>" for b in quantize(box, image_size))
