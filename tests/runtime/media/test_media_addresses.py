from __future__ import annotations

import ipaddress

import pytest

from runtime.media.addresses import forbidden_reason, parse_host_address


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.20.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("255.255.255.255", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "IPv4-mapped IPv6"),
        ("::ffff:8.8.8.8", "IPv4-mapped IPv6"),
        ("::127.0.0.1", "IPv4-compatible IPv6"),
        ("64:ff9b::a9fe:a9fe", "NAT64"),
        ("64:ff9b:1::1", "NAT64 (local use)"),
        ("2002:7f00:1::1", "6to4"),
        ("2001:0:4136:e378::1", "Teredo"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private (unique local)"),
        ("ff02::1", "multicast"),
    ],
)
def test_forbidden(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_public(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hex
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("127.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),  # trailing dot
        ("[::1]", "::1"),
        ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254"),
        ("0", "0.0.0.0"),
    ],
)
def test_spellings_of_addresses(host: str, address: str) -> None:
    assert parse_host_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "cafe.de", "1e100.net", "0x.example", "localhost"])
def test_names_are_not_addresses(host: str) -> None:
    assert parse_host_address(host) is None
