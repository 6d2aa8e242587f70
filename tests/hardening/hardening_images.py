"""Images good, odd and hostile, as bytes: what the catalogue, the image host and the fuzz server serve."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from functools import cache

from PIL import Image

BOMB_SIDE = 20_000  # 400 M pixels declared, ten times FLORENCE_MAX_IMAGE_PIXELS' default


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png(size: tuple[int, int] = (64, 48), mode: str = "RGB", colour: object = None) -> bytes:
    if colour is None:
        colour = {"RGB": (200, 40, 40), "RGBA": (200, 40, 40, 128), "L": 128, "1": 1, "P": 3, "I;16": 40_000}[mode]
    return encode(Image.new(mode, size, colour), "PNG")  # type: ignore[arg-type]


def jpeg(size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    colour: object = (0, 100, 200, 30) if mode == "CMYK" else (40, 160, 60) if mode == "RGB" else 90
    return encode(Image.new(mode, size, colour), "JPEG", quality=85)  # type: ignore[arg-type]


def rotated_jpeg() -> bytes:
    """A 40x20 JPEG whose EXIF says: rotate 90 degrees to show it (as phones write)."""
    image = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", exif=exif)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def truncated_jpeg() -> bytes:
    data = jpeg((256, 256))
    return data[: len(data) // 2]


def truncated_png() -> bytes:
    data = png((256, 256))
    return data[: len(data) - 30]


@cache
def decompression_bomb_png() -> bytes:
    """A valid 1-bit PNG of BOMB_SIDE x BOMB_SIDE white pixels: some 50 kB that inflate to 50 MB of rows."""
    row = b"\x00" + b"\x00" * (BOMB_SIDE // 8)
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(BOMB_SIDE // 1000)]
    idat = b"".join(chunks) + compressor.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def bmp_unknown_header() -> bytes:
    """A BMP file header followed by an information header of a size no BMP version has (Pillow refuses it)."""
    info = struct.pack("<I", 99) + b"\0" * 95
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@cache
@cache  # 2 s to build on a busy machine: as long as the fetch timeout it is served under
def gzip_bomb(inflated_bytes: int = 200 * 1024 * 1024) -> bytes:
    """gzip of ``inflated_bytes`` zeros after a PNG signature: about 200 kB on the wire."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as stream:
        stream.write(b"\x89PNG\r\n\x1a\n")
        block = b"\x00" * (1024 * 1024)
        for _ in range(inflated_bytes // len(block)):
            stream.write(block)
    return buffer.getvalue()


def tiff() -> bytes:
    return encode(Image.new("RGB", (8, 8)), "TIFF")


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
