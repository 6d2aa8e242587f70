"""Which IP addresses an image may be fetched from, and how hosts spell addresses.

The SSRF guard refuses every address a request could use to reach the server's own machine, its network or its
cloud's metadata service. Ranges that embed an IPv4 address in IPv6 (mapped, compatible, NAT64, 6to4, Teredo) are
refused whole, since the embedded address could be any of the others.
"""

from __future__ import annotations

import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# First match names the reason. Specific entries come before the ranges that contain them (::1 before ::/96).
_FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped IPv6"),
    ("::/96", "IPv4-compatible IPv6"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "NAT64 (local use)"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
FORBIDDEN_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), reason) for cidr, reason in _FORBIDDEN
)

_NUMERIC_HOST = re.compile(r"^[0-9][0-9a-fA-FxX.]*$")


def forbidden_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be fetched from, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "scoped IPv6"
    for network, reason in FORBIDDEN_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if not address.is_global:
        return "not globally routable"
    return None


def parse_host_address(host: str) -> IPAddress | None:
    """The address a URL host spells, or None for a name.

    Accepts what resolvers accept, not only the canonical forms: ``[::1]``, a trailing dot, and the legacy IPv4
    spellings ``2130706433``, ``0x7f.1`` and ``0177.0.0.1`` that ``inet_aton`` maps onto 127.0.0.1.
    """
    text = host.strip().removeprefix("[").removesuffix("]").rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def in_networks(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)
