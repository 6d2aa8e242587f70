"""Bytes to an RGB image, within pixel caps, in the accepted formats only."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from runtime.errors import PayloadTooLarge, UnsupportedMediaType, translate
from runtime.media.formats import describe_accepted, refused_format, sniff_format


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode ``data``; the pixel count is checked from the header, before any pixel is decompressed."""
    image_format = sniff_format(data)
    if image_format is None:
        refused = refused_format(data)
        what = f"a {refused} image" if refused else "not an image we recognise"
        raise UnsupportedMediaType(f"the image is {what}; expected {describe_accepted()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[image_format])
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
                    "(FLORENCE_MAX_IMAGE_PIXELS)"
                )
            image.seek(0)  # animated GIF and WebP: the first frame
            image.load()
            # Phones store the camera orientation in EXIF; boxes come back in the orientation people see.
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except Image.DecompressionBombWarning as exc:
        raise PayloadTooLarge(f"the image has too many pixels: {exc}") from None
    except Exception as exc:  # mapped to ours in one place
        raise translate(exc, stage="image_decode") from exc
