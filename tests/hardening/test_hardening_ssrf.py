"""The SSRF guard end to end: image URLs that point inside the machine or its networks, through the HTTP API.

The server allows exactly 127.0.0.2, where images.example lives (the fake DNS says so); every row below must be
refused with a 4xx before any connection to the target. The internal service on 127.0.0.3 counts its hits and must
see none, and the egress tripwire (conftest.py) fails the run if any non-loopback connection is attempted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hardening_egress import EgressTripwire
from hardening_hosts import ALLOWED_ADDRESS, PRIVATE_ADDRESS, PUBLIC_NAME, ImageHost
from hardening_server import HUB_ID, MAX_REDIRECTS
from hardening_spec import Spec
from live_server import LiveServer, call

COMPLETIONS = "/v1/chat/completions"
FORBIDDEN = "forbidden_address"


@dataclass(frozen=True)
class Hosts:
    public: ImageHost
    private: ImageHost
    server: LiveServer

    def via_public(self, target: str) -> str:
        """A URL on the allowed host that redirects to ``target``."""
        return self.public.url(f"/to?url={quote(target, safe='')}", PUBLIC_NAME)


@dataclass(frozen=True)
class Row:
    name: str
    url: Callable[[Hosts], str]
    code: str = FORBIDDEN
    status: int = 400


def literal(url: str, code: str = FORBIDDEN) -> Callable[[Hosts], str]:
    return lambda hosts: url


def private_port(path: str, host: str = PRIVATE_ADDRESS) -> Callable[[Hosts], str]:
    return lambda hosts: f"http://{host}:{hosts.private.port}{path}"


def hops(redirects: int) -> Callable[[Hosts], str]:
    """A URL on the allowed host that reaches the photo after ``redirects`` redirects."""
    return lambda hosts: hosts.public.url(f"/hop/{redirects - 1}", PUBLIC_NAME)


ROWS: tuple[Row, ...] = (
    # Loopback, in every spelling
    Row("127.0.0.1", literal("http://127.0.0.1/")),
    Row("127.0.0.1, the server's own port", lambda h: f"http://127.0.0.1:{h.server.port}/v1/models"),
    Row("https to 127.0.0.1", literal("https://127.0.0.1/")),
    Row("localhost", literal("http://localhost/")),
    Row("localhost with a trailing dot", literal("http://localhost./")),
    Row("LOCALHOST", literal("http://LOCALHOST/")),
    Row("[::1]", literal("http://[::1]/")),
    Row("[::1] with a port", literal("http://[::1]:8000/")),
    Row("0.0.0.0", literal("http://0.0.0.0/")),
    Row("0", literal("http://0/")),
    Row("[::]", literal("http://[::]/")),
    Row("decimal 2130706433", literal("http://2130706433/")),
    Row("octal 0177.0.0.1", literal("http://0177.0.0.1/")),
    Row("hex 0x7f.0.0.1", literal("http://0x7f.0.0.1/")),
    Row("hex 0x7f000001", literal("http://0x7f000001/")),
    Row("short 127.1", literal("http://127.1/")),
    Row("mixed 0x7f.1", literal("http://0x7f.1/")),
    Row("another loopback address, 127.0.0.3", private_port("/photo.png")),
    Row("userinfo before a loopback host", literal(f"http://{PUBLIC_NAME}@127.0.0.1/")),
    # Private, shared and link-local networks
    Row("10.0.0.1", literal("http://10.0.0.1/")),
    Row("10.255.255.254", literal("http://10.255.255.254/")),
    Row("172.16.0.1", literal("http://172.16.0.1/")),
    Row("172.31.255.254", literal("http://172.31.255.254/")),
    Row("192.168.0.1", literal("http://192.168.0.1/")),
    Row("169.254.169.254 (cloud metadata)", literal("http://169.254.169.254/latest/meta-data/")),
    Row("metadata as decimal 2852039166", literal("http://2852039166/latest/meta-data/")),
    Row("100.64.0.1 (carrier-grade NAT)", literal("http://100.64.0.1/")),
    Row("100.127.255.254", literal("http://100.127.255.254/")),
    Row("[fd00::1] (unique local)", literal("http://[fd00::1]/")),
    Row("[fe80::1] (link-local)", literal("http://[fe80::1]/")),
    # IPv4 inside IPv6
    Row("IPv4-mapped [::ffff:127.0.0.1]", literal("http://[::ffff:127.0.0.1]/")),
    Row("IPv4-mapped [::ffff:7f00:1]", literal("http://[::ffff:7f00:1]/")),
    Row("IPv4-mapped metadata", literal("http://[::ffff:169.254.169.254]/")),
    Row("IPv4-mapped 10.0.0.1", literal("http://[::ffff:10.0.0.1]/")),
    Row("IPv4-mapped form of the allowed address", lambda h: f"http://[::ffff:{ALLOWED_ADDRESS}]:{h.public.port}/"),
    Row("IPv4-compatible [::127.0.0.1]", literal("http://[::127.0.0.1]/")),
    Row("NAT64 [64:ff9b::7f00:1]", literal("http://[64:ff9b::7f00:1]/")),
    Row("NAT64 [64:ff9b::a9fe:a9fe]", literal("http://[64:ff9b::a9fe:a9fe]/")),
    Row("6to4 [2002:7f00:1::]", literal("http://[2002:7f00:1::]/")),
    # Names that resolve inside
    Row("name resolving to 10.1.2.3", literal("http://internal.example/")),
    Row("name resolving to 172.20.0.5", literal("http://intranet.example/")),
    Row("name resolving to 192.168.1.1", literal("http://router.example/")),
    Row("name resolving to the metadata address", literal("http://metadata.example/latest/meta-data/")),
    Row("name resolving to 100.64.0.1", literal("http://cgnat.example/")),
    Row("name resolving to ::1", literal("http://v6-loopback.example/")),
    Row("name resolving to ::ffff:127.0.0.1", literal("http://v6-mapped.example/")),
    Row("name resolving to fd00::1", literal("http://v6-ula.example/")),
    Row("name resolving to the internal service", private_port("/photo.png", "sneaky.example")),
    Row("name with one allowed and one private address", lambda h: f"http://mixed.example:{h.public.port}/photo.png"),
    # Redirects from the allowed host
    Row("redirect to 127.0.0.1", lambda h: h.via_public(f"http://127.0.0.1:{h.server.port}/healthz")),
    Row("redirect to the internal service", lambda h: h.via_public(f"http://{PRIVATE_ADDRESS}:{h.private.port}/photo.png")),
    Row("redirect to a name of the internal service", lambda h: h.via_public(f"http://sneaky.example:{h.private.port}/photo.png")),
    Row("redirect to the metadata address", lambda h: h.via_public("http://169.254.169.254/latest/meta-data/")),
    Row("redirect to [::1]", lambda h: h.via_public("http://[::1]/")),
    Row("redirect to decimal loopback", lambda h: h.via_public("http://2130706433/")),
    Row("redirect to localhost", lambda h: h.via_public("http://localhost/")),
    Row("redirect to a gopher: URL", lambda h: h.via_public("gopher://127.0.0.1:6379/_INFO"), "unsupported_url"),
    Row(f"{MAX_REDIRECTS + 1} redirects, over the limit", hops(MAX_REDIRECTS + 1), "image_fetch_failed"),
    Row("a redirect loop", lambda h: h.public.url("/loop", PUBLIC_NAME), "image_fetch_failed"),
)  # fmt: skip

CONTROLS: tuple[Row, ...] = (
    Row("the allowed host by name", lambda h: h.public.url("/photo.png", PUBLIC_NAME), "", 200),
    Row("the allowed address", lambda h: h.public.url("/photo.png"), "", 200),
    Row(f"{MAX_REDIRECTS} redirects, at the limit", hops(MAX_REDIRECTS), "", 200),
    Row("a redirect within the allowed host", lambda h: h.via_public(h.public.url("/photo.jpg", PUBLIC_NAME)), "", 200),
)  # fmt: skip


@pytest.fixture(scope="module")
def hosts(public_host: ImageHost, private_host: ImageHost, tiny_server: LiveServer) -> Hosts:
    return Hosts(public_host, private_host, tiny_server)


def _request(url: str) -> dict[str, object]:
    return {
        "model": HUB_ID,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "<CAPTION>"}],
            }
        ],
        "max_tokens": 2,
    }


@pytest.mark.timeout(60)
@pytest.mark.parametrize("row", ROWS + CONTROLS, ids=[row.name for row in ROWS + CONTROLS])
def test_ssrf(row: Row, hosts: Hosts, spec: Spec, egress: EgressTripwire) -> None:
    hits_before = len(hosts.private.hits)
    reply = call(hosts.server.url, "POST", COMPLETIONS, json_body=_request(row.url(hosts)))
    assert reply.status == row.status, reply.body[:500]
    if row.status != 200:
        assert reply.error["code"] == row.code, reply.error
        assert reply.error["param"] == "messages[0].content[0].image_url.url"
    spec.check("POST", COMPLETIONS, reply.status, reply.headers, reply.body)
    assert len(hosts.private.hits) == hits_before, "the internal service was reached"
    assert not egress.blocked


def test_the_table_covers_the_list() -> None:
    assert len(ROWS) >= 50
