"""The SSRF guard with a fake resolver: nothing here touches DNS or the network."""

from __future__ import annotations

import ipaddress

import pytest
from fakes import FakeResolver

from runtime.errors import ForbiddenAddress, ImageFetchFailed
from runtime.media.guard import AddressGuard, PinnedResolver

RESOLVER_TABLE = {
    "public.test": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "internal.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "192.168.0.10"],  # one bad answer spoils the lot (DNS rebinding)
    "mapped.test": ["::ffff:10.0.0.1"],
    "local.test": ["127.0.0.1"],
    "empty.test": [],
}


def _guard(allowed: tuple[str, ...] = ()) -> tuple[AddressGuard, FakeResolver]:
    resolver = FakeResolver(RESOLVER_TABLE)
    return AddressGuard(resolver, [ipaddress.ip_network(n) for n in allowed]), resolver


async def test_public_name_resolves_to_every_answer() -> None:
    guard, _ = _guard()
    addresses = await guard.addresses_for("public.test", 443)
    assert [str(a) for a in addresses] == RESOLVER_TABLE["public.test"]


@pytest.mark.parametrize("host", ["internal.test", "metadata.test", "mixed.test", "mapped.test", "local.test"])
async def test_forbidden_answers_are_refused(host: str) -> None:
    guard, _ = _guard()
    with pytest.raises(ForbiddenAddress) as caught:
        await guard.addresses_for(host, 80)
    assert caught.value.status == 400 and caught.value.code == "forbidden_address"
    assert "FLORENCE_IMAGE_ALLOWED_NETWORKS" in caught.value.message
    assert "10.0.0" not in caught.value.message and "192.168" not in caught.value.message  # no internal addresses


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "[::1]", "169.254.169.254", "[::ffff:7f00:1]"]
)
async def test_literal_hosts_are_checked_without_a_lookup(host: str) -> None:
    guard, resolver = _guard()
    with pytest.raises(ForbiddenAddress):
        await guard.addresses_for(host, 80)
    assert resolver.lookups == []


async def test_allowed_networks_let_chosen_addresses_through() -> None:
    guard, _ = _guard(("127.0.0.0/8",))
    assert [str(a) for a in await guard.addresses_for("local.test", 80)] == ["127.0.0.1"]
    assert [str(a) for a in await guard.addresses_for("2130706433", 80)] == ["127.0.0.1"]
    with pytest.raises(ForbiddenAddress):
        await guard.addresses_for("internal.test", 80)


async def test_names_that_do_not_resolve() -> None:
    guard, _ = _guard()
    with pytest.raises(ImageFetchFailed, match="could not resolve"):
        await guard.addresses_for("nowhere.test", 80)
    with pytest.raises(ImageFetchFailed, match="no address"):
        await guard.addresses_for("empty.test", 80)


async def test_pinned_resolver_hands_aiohttp_only_vetted_addresses() -> None:
    guard, _ = _guard()
    results = await PinnedResolver(guard).resolve("public.test", 443)
    assert [r["host"] for r in results] == RESOLVER_TABLE["public.test"]
    assert all(r["hostname"] == "public.test" and r["port"] == 443 for r in results)
    with pytest.raises(ForbiddenAddress):
        await PinnedResolver(guard).resolve("mixed.test", 443)
