"""Images for the binding: URLs to bytes (http(s) through the SSRF guard, or ``data:``), bytes to bounded RGB."""

from runtime.media.loader import ImageLoader

__all__ = ["ImageLoader"]
