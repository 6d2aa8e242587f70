"""Bytes to an RGB image, within pixel caps, in the accepted formats only."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from runtime.errors import PayloadTooLarge, UnsupportedMediaType, translate
from runtime.media.formats import describe_accepted, refused_format, sniff_format

EXIF_ORIENTATION = 0x0112


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode ``data``; the pixel count is checked from the header, before any pixel is decompressed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open_within(data, max_pixels)
            image.seek(0)  # animated GIF and WebP: the first frame
            image.load()
            # Phones store the camera orientation in EXIF; boxes come back in the orientation people see.
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except Image.DecompressionBombWarning as exc:
        raise PayloadTooLarge(f"the image has too many pixels: {exc}") from None
    except Exception as exc:  # mapped to ours in one place
        raise translate(exc, stage="image_decode") from exc


def image_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height of ``data`` as shown (EXIF orientations 5-8 swap them), with the checks and errors of
    ``decode_image``; the pixels are decompressed only where the format keeps its EXIF after them (PNG), and only
    once the pixel limit has passed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open_within(data, max_pixels)
            width, height = image.size
            if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except Image.DecompressionBombWarning as exc:
        raise PayloadTooLarge(f"the image has too many pixels: {exc}") from None
    except Exception as exc:
        raise translate(exc, stage="image_decode") from exc


def _open_within(data: bytes, max_pixels: int) -> Image.Image:
    """The image opened (header read, no pixel decoded) in the format its bytes show, within ``max_pixels``."""
    image_format = sniff_format(data)
    if image_format is None:
        refused = refused_format(data)
        what = f"a {refused} image" if refused else "not an image we recognise"
        raise UnsupportedMediaType(f"the image is {what}; expected {describe_accepted()}")
    image = Image.open(io.BytesIO(data), formats=[image_format])
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "(FLORENCE_MAX_IMAGE_PIXELS)"
        )
    return image
