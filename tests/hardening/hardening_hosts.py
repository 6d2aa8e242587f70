"""Image servers on loopback addresses, and the fake DNS that gives them "public" names.

The server under test allows exactly ALLOWED_ADDRESS (127.0.0.2/32): there ``images.example`` lives, standing in
for a public image host. A second server on PRIVATE_ADDRESS (127.0.0.3), outside the allow-list, stands in for an
internal service: it counts its hits, so a test can show that a refused fetch never reached it. Every other
address in the fake DNS is refused before any connection, so nothing ever leaves the machine.
"""

from __future__ import annotations

import http.server
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import hardening_images as images

ALLOWED_ADDRESS = "127.0.0.2"
PRIVATE_ADDRESS = "127.0.0.3"
PUBLIC_NAME = "images.example"
ALLOWED_NETWORKS = (ipaddress.ip_network(f"{ALLOWED_ADDRESS}/32"),)

DNS: dict[str, list[str]] = {
    PUBLIC_NAME: [ALLOWED_ADDRESS],
    "localhost": ["127.0.0.1", "::1"],
    "localhost.": ["127.0.0.1", "::1"],
    "internal.example": ["10.1.2.3"],
    "intranet.example": ["172.20.0.5"],
    "router.example": ["192.168.1.1"],
    "metadata.example": ["169.254.169.254"],
    "cgnat.example": ["100.64.0.1"],
    "v6-loopback.example": ["::1"],
    "v6-mapped.example": ["::ffff:127.0.0.1"],
    "v6-ula.example": ["fd00::1"],
    "mixed.example": [ALLOWED_ADDRESS, "10.0.0.7"],  # one allowed answer, one private: refused whole
    "sneaky.example": [PRIVATE_ADDRESS],
}

PHOTO_PNG = images.png((96, 64))
PHOTO_JPEG = images.jpeg((96, 64))


@dataclass
class ImageHost:
    address: str
    port: int
    hits: list[str] = field(default_factory=list)

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.address}:{self.port}{path}"


Route = Callable[["_Handler"], None]


class _Handler(http.server.BaseHTTPRequestHandler):
    host: ImageHost
    routes: dict[str, Route]

    def do_GET(self) -> None:
        self.host.hits.append(self.path)
        path = urlsplit(self.path).path
        route = self.routes.get(path) or _prefixed(self.routes, path) or _missing
        route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.answer(302, headers={"Location": location})

    def query(self, name: str) -> str:
        return parse_qs(urlsplit(self.path).query)[name][0]


def _prefixed(routes: dict[str, Route], path: str) -> Route | None:
    for prefix, route in routes.items():
        if prefix.endswith("/") and path.startswith(prefix):
            return route
    return None


def _missing(handler: _Handler) -> None:
    handler.answer(404, b"not here", {"Content-Type": "text/plain"})


def _image(data: bytes, content_type: str) -> Route:
    return lambda handler: handler.answer(200, data, {"Content-Type": content_type})


def _hop(handler: _Handler) -> None:
    """/hop/N redirects N more times (relative Location), then to the photo."""
    remaining = int(handler.path.rsplit("/", 1)[1])
    handler.redirect(f"/hop/{remaining - 1}" if remaining > 0 else "/photo.png")


def _declared_too_big(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(50 * 1024 * 1024))
    handler.end_headers()
    handler.wfile.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 1024)


def _endless(handler: _Handler) -> None:
    """No Content-Length, the body ends when the connection does: 1 MB blocks, 12 of them."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Connection", "close")
    handler.end_headers()
    try:
        handler.wfile.write(b"\x89PNG\r\n\x1a\n")
        for _ in range(12):
            handler.wfile.write(b"\x00" * (1024 * 1024))
    except OSError:
        pass  # the fetcher hung up at its cap


def _slow(handler: _Handler) -> None:
    time.sleep(4)  # a host slower than the fetch timeout: the delay is what is tested
    handler.answer(200, PHOTO_PNG, {"Content-Type": "image/png"})


def _stalls_mid_body(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(PHOTO_PNG)))
    handler.end_headers()
    handler.wfile.write(PHOTO_PNG[:100])
    handler.wfile.flush()
    time.sleep(4)  # a body that stops mid-way for longer than the fetch timeout: the stall is what is tested


def _hangs_up(handler: _Handler) -> None:
    handler.close_connection = True
    handler.connection.shutdown(2)


def _cut_short(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", str(len(PHOTO_PNG)))
    handler.end_headers()
    handler.wfile.write(PHOTO_PNG[:50])
    handler.close_connection = True


ROUTES: dict[str, Route] = {
    "/photo.png": _image(PHOTO_PNG, "image/png"),
    "/photo.jpg": _image(PHOTO_JPEG, "image/jpeg"),
    "/untyped": _image(PHOTO_PNG, "application/octet-stream"),
    "/lying-type.jpg": _image(PHOTO_PNG, "image/jpeg"),  # the bytes decide
    "/page.html": _image(b"<html>not an image</html>", "text/html"),
    "/text.png": _image(b"this is not a png", "image/png"),
    "/gzip-bomb": lambda h: h.answer(
        200, images.gzip_bomb(), {"Content-Type": "image/png", "Content-Encoding": "gzip"}
    ),
    "/gzip-untyped": lambda h: h.answer(200, images.gzip_bomb(), {"Content-Type": "application/octet-stream"}),
    "/bomb.png": lambda h: h.answer(200, images.decompression_bomb_png(), {"Content-Type": "image/png"}),
    "/error": lambda h: h.answer(500, b"boom", {"Content-Type": "text/plain"}),
    "/declared-too-big": _declared_too_big,
    "/endless": _endless,
    "/slow": _slow,
    "/stalls": _stalls_mid_body,
    "/hangs-up": _hangs_up,
    "/cut-short": _cut_short,
    "/hop/": _hop,
    "/to": lambda h: h.redirect(h.query("url")),
    "/no-location": lambda h: h.answer(302),
    "/loop": lambda h: h.redirect("/loop"),
}


@contextmanager
def image_host(address: str, routes: dict[str, Route] | None = None) -> Iterator[ImageHost]:
    images.gzip_bomb()  # built before the host serves it: its build time is not the server's answer time
    server = http.server.ThreadingHTTPServer((address, 0), _Handler)
    server.daemon_threads = True
    host = ImageHost(address=address, port=int(server.server_address[1]))
    server.RequestHandlerClass = type("Handler", (_Handler,), {"host": host, "routes": routes or ROUTES})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()
