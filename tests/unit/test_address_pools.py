"""Pools of extra addresses: how CLOUDPLANE_ADDRESS_POOLS is read, and the LXC bridge's share kept for them."""

from __future__ import annotations

import ipaddress

import pytest

from cloudplane.config import Settings
from cloudplane.domain.addresses import AddressPool, top_quarter
from cloudplane.providers import lxc_host
from cloudplane.services.network import pool_of


def test_a_pool_is_a_cidrs_usable_addresses_or_a_range() -> None:
    assert list(AddressPool.parse("192.0.2.0/29").addresses()) == [f"192.0.2.{i}" for i in range(1, 7)]
    assert list(AddressPool.parse("192.0.2.9 - 192.0.2.11").addresses()) == ["192.0.2.9", "192.0.2.10", "192.0.2.11"]
    assert list(AddressPool.parse("192.0.2.5/32").addresses()) == ["192.0.2.5"]
    assert "192.0.2.10" in AddressPool.parse("192.0.2.9-192.0.2.11") and "192.0.2.12" not in AddressPool.parse(
        "192.0.2.9-192.0.2.11"
    )


@pytest.mark.parametrize("text", ["192.0.2.1/29", "192.0.2.9-192.0.2.8", "nyc1", "2001:db8::/64", "192.0.2.0-x"])
def test_a_bad_pool_is_refused_saying_so(text: str) -> None:
    with pytest.raises(ValueError):
        AddressPool.parse(text)


def test_the_setting_names_a_pool_per_location() -> None:
    settings = Settings(address_pools="NYC1=192.0.2.0/28, fra1=192.0.2.20-192.0.2.30,lon1=")
    assert settings.address_pools == {"nyc1": "192.0.2.0/28", "fra1": "192.0.2.20-192.0.2.30", "lon1": ""}
    assert pool_of(settings, "fra1", "simulator") == AddressPool.parse("192.0.2.20-192.0.2.30")
    assert pool_of(settings, "lon1", "simulator") is None  # given none
    assert pool_of(settings, "sgp1", "simulator") == AddressPool.parse("203.0.113.128/26")  # its default
    assert pool_of(settings, "nowhere", "simulator") is None
    # An LXC location's default is the top quarter of the bridge's subnet.
    lxc = Settings(lxc_subnet="10.9.0.0/24")
    assert pool_of(lxc, "nyc1", "lxc") == top_quarter(ipaddress.IPv4Network("10.9.0.0/24"))
    for bad in ("nyc1", "nyc1=10.0.0.1/8", "nyc1=192.0.2.0/28,nyc1=192.0.2.16/28"):
        with pytest.raises(ValueError, match="CLOUDPLANE_ADDRESS_POOLS"):
            Settings(address_pools=bad)


def test_new_lxc_containers_never_take_the_top_quarter() -> None:
    network = lxc_host.Network.parse("cpbr9", "10.9.0.0/24")
    pool = network.extra_pool
    assert (str(pool.first), str(pool.last)) == ("10.9.0.192", "10.9.0.254")
    addresses = network.container_addresses()
    assert str(addresses[0]) == "10.9.0.2" and str(addresses[-1]) == "10.9.0.191"
    assert not any(a in pool for a in addresses)
