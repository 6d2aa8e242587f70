"""Image fetching against an aiohttp server on 127.0.0.1; names resolve through a fake resolver.

The only traffic goes to the loopback server: addresses the guard refuses are never dialled.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from fakes import FakeResolver, image_bytes

from runtime.config import MediaSettings
from runtime.errors import (
    ForbiddenAddress,
    ImageFetchFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnsupportedUrl,
    UpstreamTimeout,
)
from runtime.media import ImageLoader
from runtime.media.fetch import ImageFetcher

PNG = image_bytes((0, 255, 0), (16, 8))
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@dataclass
class ImageServer:
    port: int
    hits: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    state = ImageServer(port=0)

    async def handle(request: web.Request) -> web.StreamResponse:
        state.hits.append(request.path)
        path = request.path
        if path == "/green.png":
            return web.Response(body=PNG, content_type="image/png")
        if path == "/untyped":
            return web.Response(body=PNG, content_type="application/octet-stream")
        if path == "/page.html":
            return web.Response(text="<html></html>", content_type="text/html")
        if path == "/missing":
            return web.Response(status=404)
        if path == "/to-green":
            raise web.HTTPFound(f"http://images.test:{state.port}/green.png")
        if path == "/to-internal":
            raise web.HTTPFound("http://internal.test/secret.png")
        if path == "/to-metadata-literal":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        if path == "/to-file":
            raise web.HTTPFound("file:///etc/passwd")
        if path == "/loop":
            raise web.HTTPFound("/loop")
        if path == "/big-declared":
            return web.Response(body=b"\x89PNG" + b"\0" * 5000, content_type="image/png")
        if path == "/big-chunked":
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(10):
                await response.write(b"\0" * 1000)
            await response.write_eof()
            return response
        if path == "/gzip":
            return web.Response(body=PNG, headers={"Content-Type": "image/png", "Content-Encoding": "gzip"})
        if path == "/slow":
            await state.release.wait()
            return web.Response(body=PNG, content_type="image/png")
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state
    state.release.set()
    await runner.cleanup()


def _fetcher(allowed: bool = True, **settings: object) -> ImageFetcher:
    resolver = FakeResolver({"images.test": ["127.0.0.1"], "internal.test": ["10.0.0.5"]})
    media = MediaSettings(allowed_networks=LOOPBACK if allowed else (), **settings)  # type: ignore[arg-type]
    return ImageFetcher(media, resolver)


async def _fetch(fetcher: ImageFetcher, url: str) -> bytes:
    try:
        return await fetcher.fetch(url)
    finally:
        await fetcher.close()


async def test_fetch_by_name_connects_to_the_vetted_address(server: ImageServer) -> None:
    # images.test exists only in the fake resolver: the bytes arriving prove aiohttp dialled its answer.
    assert await _fetch(_fetcher(), server.url("/green.png", host="images.test")) == PNG


async def test_loopback_is_refused_without_the_allow_setting(server: ImageServer) -> None:
    with pytest.raises(ForbiddenAddress):
        await _fetch(_fetcher(allowed=False), server.url("/green.png"))
    with pytest.raises(ForbiddenAddress):
        await _fetch(_fetcher(allowed=False), server.url("/green.png", host="images.test"))
    assert server.hits == []


async def test_redirects_are_followed_and_each_hop_is_vetted(server: ImageServer) -> None:
    assert await _fetch(_fetcher(), server.url("/to-green")) == PNG
    with pytest.raises(ForbiddenAddress):
        await _fetch(_fetcher(), server.url("/to-internal"))
    with pytest.raises(ForbiddenAddress):
        await _fetch(_fetcher(), server.url("/to-metadata-literal"))
    with pytest.raises(UnsupportedUrl):
        await _fetch(_fetcher(), server.url("/to-file"))


async def test_redirect_loops_end(server: ImageServer) -> None:
    with pytest.raises(ImageFetchFailed, match="redirected more than 3 times"):
        await _fetch(_fetcher(max_redirects=3), server.url("/loop"))
    assert server.hits.count("/loop") == 4


async def test_content_type_is_checked(server: ImageServer) -> None:
    assert await _fetch(_fetcher(), server.url("/untyped")) == PNG
    with pytest.raises(UnsupportedMediaType, match="text/html"):
        await _fetch(_fetcher(), server.url("/page.html"))
    with pytest.raises(UnsupportedMediaType, match="Content-Encoding"):
        await _fetch(_fetcher(), server.url("/gzip"))


async def test_byte_cap(server: ImageServer) -> None:
    with pytest.raises(PayloadTooLarge):
        await _fetch(_fetcher(max_image_bytes=4000), server.url("/big-declared"))
    with pytest.raises(PayloadTooLarge):
        await _fetch(_fetcher(max_image_bytes=4000), server.url("/big-chunked"))


async def test_upstream_errors(server: ImageServer) -> None:
    with pytest.raises(ImageFetchFailed, match="404"):
        await _fetch(_fetcher(), server.url("/missing"))
    with pytest.raises(ImageFetchFailed, match="resolve"):
        await _fetch(_fetcher(), "http://nowhere.test/x.png")


async def test_total_timeout(server: ImageServer) -> None:
    with pytest.raises(UpstreamTimeout) as caught:
        await _fetch(_fetcher(fetch_timeout_s=0.3), server.url("/slow"))
    assert caught.value.status == 504


async def test_loader_decodes_and_tags_errors_with_the_path(server: ImageServer) -> None:
    loader = ImageLoader(MediaSettings(allowed_networks=LOOPBACK), FakeResolver({}))
    try:
        image = await loader.load(server.url("/green.png"), param="messages[0].content[0].image_url.url")
        assert image.size == (16, 8)
        with pytest.raises(UnsupportedMediaType) as caught:
            await loader.load(server.url("/page.html"), param="messages[0].content[0].image_url.url")
        assert caught.value.param == "messages[0].content[0].image_url.url"
    finally:
        await loader.close()
