"""Pools of extra public IPv4 addresses, one per location: a CIDR ("198.51.100.0/28": its usable addresses) or a
range ("203.0.113.10-203.0.113.20", both ends included). No I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

# The simulator's locations: documentation ranges (RFC 5737), a /26 each, never routed anywhere.
DEFAULT_POOLS = {
    "nyc1": "198.51.100.0/26",
    "sfo2": "198.51.100.64/26",
    "mia1": "198.51.100.128/26",
    "fra1": "198.51.100.192/26",
    "lon1": "203.0.113.0/26",
    "sao1": "203.0.113.64/26",
    "sgp1": "203.0.113.128/26",
}


@dataclass(frozen=True)
class AddressPool:
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address
    # As configured, to name the pool in messages.
    text: str

    @classmethod
    def parse(cls, text: str) -> AddressPool:
        """A CIDR or a "first-last" range; ValueError saying what is wrong."""
        text = text.strip()
        try:
            if "-" in text:
                low, _, high = text.partition("-")
                first, last = ipaddress.IPv4Address(low.strip()), ipaddress.IPv4Address(high.strip())
            else:
                network = ipaddress.IPv4Network(text, strict=True)
                hosts = list(network.hosts()) if network.num_addresses <= 2 else None
                first, last = (
                    (hosts[0], hosts[-1]) if hosts else (network.network_address + 1, network.broadcast_address - 1)
                )
        except (ValueError, IndexError) as error:
            raise ValueError(
                f"{text!r} is not an IPv4 network (198.51.100.0/28) or range (203.0.113.10-203.0.113.20): {error}"
            ) from None
        if last < first:
            raise ValueError(f"{text!r}: the range's first address is above its last")
        return cls(first, last, text)

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def addresses(self) -> Iterator[str]:
        """Lowest first."""
        for number in range(int(self.first), int(self.last) + 1):
            yield str(ipaddress.IPv4Address(number))

    def __contains__(self, address: object) -> bool:
        try:
            return self.first <= ipaddress.IPv4Address(str(address)) <= self.last
        except ValueError:
            return False


def top_quarter(subnet: ipaddress.IPv4Network) -> AddressPool:
    """The top quarter of a subnet's addresses, its broadcast address left out: an LXC bridge's pool of extra
    addresses, which the LXC provider never gives a new container (lxc_host.Network.container_addresses)."""
    first = subnet.network_address + subnet.num_addresses * 3 // 4
    last = subnet.broadcast_address - 1
    return AddressPool(first, last, f"{first}-{last}")


def parse_pools(text: str) -> dict[str, str]:
    """`nyc1=198.51.100.0/28,fra1=203.0.113.10-203.0.113.20` as {location: pool}, each pool checked; a location
    given an empty pool (`nyc1=`) has none."""
    pools: dict[str, str] = {}
    for entry in filter(str.strip, text.split(",")):
        location, equals, pool = entry.partition("=")
        location = location.strip().lower()
        if not equals or not location:
            raise ValueError(
                f"CLOUDPLANE_ADDRESS_POOLS entry {entry.strip()!r} is not location=pool "
                "(e.g. nyc1=198.51.100.0/28,fra1=203.0.113.10-203.0.113.20)"
            )
        if location in pools:
            raise ValueError(f"CLOUDPLANE_ADDRESS_POOLS names location {location!r} twice")
        if pool.strip():
            try:
                AddressPool.parse(pool)
            except ValueError as error:
                raise ValueError(f"CLOUDPLANE_ADDRESS_POOLS entry for {location}: {error}") from None
        pools[location] = pool.strip()
    return pools
