from __future__ import annotations

import io
import struct
import zlib

import pytest
from fakes import image_bytes
from PIL import Image

from runtime.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType
from runtime.media.decode import decode_image

LIMIT = 10_000_000


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_accepted_formats(fmt: str) -> None:
    image = decode_image(image_bytes((0, 0, 255), (30, 20), fmt), LIMIT)
    assert image.size == (30, 20) and image.mode == "RGB"
    red, green, blue = image.getpixel((5, 5))  # type: ignore[misc]
    assert blue > 200 and red < 60 and green < 60


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image = decode_image(buffer.getvalue(), LIMIT)
    assert image.getpixel((0, 0))[0] > 200  # type: ignore[index]


def test_rgba_and_greyscale_become_rgb() -> None:
    for mode in ("RGBA", "L", "P"):
        buffer = io.BytesIO()
        Image.new(mode, (4, 4)).save(buffer, format="PNG")
        assert decode_image(buffer.getvalue(), LIMIT).mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 20 wide, 40 high
    Image.new("RGB", (40, 20), (255, 0, 0)).save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), LIMIT).size == (20, 40)


def test_tiff_is_refused() -> None:
    with pytest.raises(UnsupportedMediaType, match="TIFF") as caught:
        decode_image(image_bytes(fmt="TIFF"), LIMIT)
    assert caught.value.status == 415


def test_not_an_image() -> None:
    with pytest.raises(UnsupportedMediaType, match="JPEG, PNG, WebP, GIF or BMP"):
        decode_image(b"<html>hello</html>", LIMIT)


def test_truncated_image() -> None:
    data = image_bytes(size=(200, 200), fmt="JPEG")
    with pytest.raises(InvalidImage) as caught:
        decode_image(data[: len(data) // 3], LIMIT)
    assert caught.value.status == 400


def test_pixel_cap_is_checked_from_the_header() -> None:
    with pytest.raises(PayloadTooLarge, match="FLORENCE_MAX_IMAGE_PIXELS") as caught:
        decode_image(image_bytes(size=(100, 100)), 9_999)
    assert caught.value.status == 413
    assert decode_image(image_bytes(size=(100, 100)), 10_000).size == (100, 100)


def test_decompression_bomb_header_is_refused_without_decoding() -> None:
    """A PNG whose header claims 50000 x 50000 pixels, with no pixel data: refused before any allocation."""
    data = image_bytes(size=(1, 1))
    ihdr = data.index(b"IHDR")
    header = b"IHDR" + struct.pack(">II", 50000, 50000) + data[ihdr + 12 : ihdr + 17]
    forged = data[:ihdr] + header + struct.pack(">I", zlib.crc32(header)) + data[ihdr + 21 :]
    with pytest.raises(PayloadTooLarge, match="pixels") as caught:
        decode_image(forged, LIMIT)
    assert caught.value.status == 413
