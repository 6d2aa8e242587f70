"""The image formats we accept, told apart by their leading bytes rather than by what a server claims.

JPEG, PNG, WebP, GIF (first frame) and BMP are accepted: what browsers show and cameras, phones and screenshots
produce. TIFF is refused: multi-page, many codecs, a long history of decoder flaws, and no browser shows it.
"""

from __future__ import annotations

ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # Pillow's format names

ACCEPTED_CONTENT_TYPES: frozenset[str] = frozenset(
    {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/x-ms-bmp"}
)
# Servers that do not know what they serve: accepted, and the bytes decide.
UNTYPED_CONTENT_TYPES: frozenset[str] = frozenset({"", "application/octet-stream", "binary/octet-stream"})

_REFUSED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"\x00\x00\x01\x00", "ICO"),
)


def sniff_format(data: bytes) -> str | None:
    """The accepted format ``data`` starts like, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def refused_format(data: bytes) -> str | None:
    """A recognised format we refuse (for the error message), or None."""
    head = data[:16].lstrip()
    for signature, name in _REFUSED_SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def describe_accepted() -> str:
    return "JPEG, PNG, WebP, GIF or BMP"
