"""Image URL (http, https or data:) to a decoded RGB image."""

from __future__ import annotations

import asyncio
from typing import Protocol

from PIL import Image

from runtime.config import MediaSettings
from runtime.errors import PayloadTooLarge, RuntimeErrorBase, UnsupportedUrl
from runtime.media.data_url import decode_data_url
from runtime.media.decode import decode_image, image_size
from runtime.media.fetch import ImageFetcher
from runtime.media.resolver import Resolver


class Fetcher(Protocol):
    """http(s) URL to bytes; ImageFetcher is the real one (tests substitute one that never dials out)."""

    async def fetch(self, url: str) -> bytes: ...

    async def close(self) -> None: ...


class ImageLoader:
    def __init__(
        self, settings: MediaSettings, resolver: Resolver | None = None, fetcher: Fetcher | None = None
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher or ImageFetcher(settings, resolver)

    async def load(self, url: str, *, param: str | None = None) -> Image.Image:
        """The image at ``url``; errors carry ``param`` (the JSON path of the URL in the request)."""
        try:
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme == "data":
                data = await asyncio.to_thread(decode_data_url, url, self._settings.max_image_bytes)
            elif scheme in ("http", "https"):
                data = await self._fetcher.fetch(url)
            else:
                raise UnsupportedUrl(f"image URLs must be http, https or data:, not {scheme or 'relative'}")
            # Decoding a large image takes tens of milliseconds: off the event loop, which serves everyone.
            return await asyncio.to_thread(decode_image, data, self._settings.max_image_pixels)
        except RuntimeErrorBase as exc:
            exc.param = exc.param or param
            raise

    async def size_of(self, data: bytes) -> tuple[int, int]:
        """Width and height (as shown) of image bytes a function received, within the same limits and with the
        same errors as ``load``."""
        limit = self._settings.max_image_bytes
        if len(data) > limit:
            raise PayloadTooLarge(f"the image is {len(data)} bytes, over {limit}, the limit (FLORENCE_MAX_IMAGE_BYTES)")
        return await asyncio.to_thread(image_size, data, self._settings.max_image_pixels)

    async def close(self) -> None:
        await self._fetcher.close()
