"""http(s) image fetching through the SSRF guard: pinned addresses, every redirect vetted, bytes and time capped."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from yarl import URL

from runtime.config import MediaSettings
from runtime.errors import ImageFetchFailed, PayloadTooLarge, UnsupportedMediaType, UnsupportedUrl, translate
from runtime.media.formats import ACCEPTED_CONTENT_TYPES, UNTYPED_CONTENT_TYPES, describe_accepted
from runtime.media.guard import AddressGuard, PinnedResolver
from runtime.media.resolver import Resolver, SystemResolver
from runtime.untrusted import quote

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
USER_AGENT = "florence-edge image fetcher"


class ImageFetcher:
    """Fetches image bytes over http(s). One aiohttp session, opened on first use and closed by ``close``."""

    def __init__(self, settings: MediaSettings, resolver: Resolver | None = None) -> None:
        self._settings = settings
        self._guard = AddressGuard(resolver or SystemResolver(), settings.allowed_networks)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=PinnedResolver(self._guard), use_dns_cache=False, limit=64)
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self._settings.connect_timeout_s,
                sock_connect=self._settings.connect_timeout_s,
                sock_read=self._settings.fetch_timeout_s,
            )
            # trust_env stays False: a proxy from the environment would connect on our behalf, past the guard.
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False, headers={"User-Agent": USER_AGENT}
            )
        return self._session

    async def fetch(self, url: str) -> bytes:
        try:
            async with asyncio.timeout(self._settings.fetch_timeout_s):
                return await self._follow(parse_url(url))
        except Exception as exc:  # every failure leaves as one of ours
            raise translate(exc, stage="image_fetch") from exc

    async def _follow(self, url: URL) -> bytes:
        for _hop in range(self._settings.max_redirects + 1):
            if url.scheme not in ("http", "https"):
                raise UnsupportedUrl(
                    f"the image URL redirects to a {url.scheme or 'relative'}: URL; only http and https"
                )
            if not url.host:
                raise UnsupportedUrl("the image URL has no host")
            self._guard.check_literal(url.host)  # aiohttp dials IP literals without asking the resolver
            async with self._client().get(url, allow_redirects=False, headers={"Accept": "image/*"}) as response:
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageFetchFailed(f"the image server at {url.host} redirected without a Location")
                    url = url.join(parse_url(location, redirected_by=url.host))
                    continue
                if response.status != 200:
                    raise ImageFetchFailed(f"the image server at {url.host} answered {response.status}, expected 200")
                self._check_content_type(response)
                return await self._read_capped(response)
        raise ImageFetchFailed(f"the image URL redirected more than {self._settings.max_redirects} times")

    @staticmethod
    def _check_content_type(response: aiohttp.ClientResponse) -> None:
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in ACCEPTED_CONTENT_TYPES and content_type not in UNTYPED_CONTENT_TYPES:
            raise UnsupportedMediaType(f"the image URL serves {quote(content_type)}; expected {describe_accepted()}")
        if response.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
            # Compressed bodies would let a small transfer inflate past the byte cap; images gain nothing from it.
            raise UnsupportedMediaType("the image server sent a compressed (Content-Encoding) body; send it plain")

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        cap = self._settings.max_image_bytes
        declared = response.content_length
        if declared is not None and declared > cap:
            raise PayloadTooLarge(f"the image is {declared} bytes; the limit is {cap} (FLORENCE_MAX_IMAGE_BYTES)")
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            received += len(chunk)
            if received > cap:
                raise PayloadTooLarge(f"the image is over {cap} bytes, the limit (FLORENCE_MAX_IMAGE_BYTES)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_url(text: str, *, redirected_by: str | None = None) -> URL:
    """The URL, with its host and port checked now (yarl checks them lazily): a port past 65535 or a host that
    is not valid IDNA is a bad URL, not a failure of ours."""
    try:
        url = URL(text)
        _ = (url.host, url.port)
    except ValueError as exc:  # UnicodeError (IDNA) is a ValueError too
        where = f"the image server at {redirected_by} redirected to" if redirected_by else "the image URL is"
        raise UnsupportedUrl(f"{where} an invalid URL ({exc})") from None
    return url
