"""The SSRF guard: every address an image fetch may connect to is vetted here, and only vetted ones are dialled.

``AddressGuard.addresses_for`` resolves a host and checks every answer; ``PinnedResolver`` hands aiohttp exactly
those answers, so the connection goes to the address that was checked (a second lookup could answer differently).
aiohttp does not consult a resolver for IP literals, so the fetcher checks a literal host before each request and
each redirect with ``check_literal``.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult

from runtime.errors import ForbiddenAddress, ImageFetchFailed
from runtime.media.addresses import IPAddress, IPNetwork, forbidden_reason, in_networks, parse_host_address
from runtime.media.resolver import Resolver
from runtime.untrusted import quote

ALLOW_SETTING = "FLORENCE_IMAGE_ALLOWED_NETWORKS"


class AddressGuard:
    def __init__(self, resolver: Resolver, allowed_networks: Sequence[IPNetwork] = ()) -> None:
        self._resolver = resolver
        self._allowed = tuple(allowed_networks)

    def check(self, host: str, address: IPAddress) -> None:
        if in_networks(address, self._allowed):
            return
        reason = forbidden_reason(address)
        if reason is not None:
            raise ForbiddenAddress(
                f"refusing to fetch an image from {quote(host)}: it is or resolves to a {reason} address. Images are "
                f"fetched from public addresses only ({ALLOW_SETTING} lets chosen networks through)."
            )

    def check_literal(self, host: str) -> IPAddress | None:
        """Check a host that spells an address; None when it is a name (``addresses_for`` checks those)."""
        address = parse_host_address(host)
        if address is not None:
            self.check(host, address)
        return address

    async def addresses_for(self, host: str, port: int) -> list[IPAddress]:
        literal = self.check_literal(host)
        if literal is not None:
            return [literal]
        try:
            addresses = await self._resolver.resolve(host, port)
        except OSError as exc:
            raise ImageFetchFailed(f"could not resolve the image host {quote(host)}: {exc.strerror or exc}") from None
        if not addresses:
            raise ImageFetchFailed(f"the image host {quote(host)} has no address")
        for address in addresses:  # all of them: a name mixing public and private answers is refused whole
            self.check(host, address)
        return addresses


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver hook: answers only with addresses the guard vetted."""

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._guard.addresses_for(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET if address.version == 4 else socket.AF_INET6,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None
