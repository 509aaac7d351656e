"""The guard on URLs Cloudplane calls on someone's behalf (webhook endpoints, app git URLs): https
only, no credentials in the URL, and every address the host resolves to public, so that a URL cannot make this
service reach its own network (SSRF). An address is judged after unwrapping the IPv6 forms that carry an IPv4 one
(IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4, Teredo). The check runs when a URL is saved and again
before every call, whose connection then goes to the very addresses checked (a name that resolves elsewhere the
second time is no way around it).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from cloudplane.domain.errors import ValidationFailed

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


@dataclass(frozen=True)
class Target:
    """A checked URL: its parts, and the addresses its host resolved to (each one allowed)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo's client), or the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64 or address in _NAT64_LOCAL:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def is_public(address: IPAddress) -> bool:
    """Reachable on the public internet: not private, loopback, link-local, shared (CGNAT), multicast, reserved or
    unspecified; an IPv6 address that carries an IPv4 one is judged by the IPv4 one."""
    inner = unwrap(address)
    return inner.is_global and not inner.is_multicast


def check_syntax(url: str, *, allow_private: bool, field: str = "url") -> SplitResult:
    """The URL's parts, or ValidationFailed naming `field` and what to change."""
    if len(url) > MAX_URL_LENGTH:
        raise ValidationFailed(f"The URL is longer than {MAX_URL_LENGTH} characters", field=field)
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValidationFailed("The URL must be ASCII without spaces (use the IDNA and %-encoded forms)", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValidationFailed(f"Not a valid URL: {error}", field=field) from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise ValidationFailed("The URL must start with https://", field=field)
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed("The URL must not carry credentials (user:password@); drop them", field=field)
    if not parts.hostname:
        raise ValidationFailed("The URL has no host", field=field)
    if parts.fragment:
        raise ValidationFailed("The URL must not have a #fragment", field=field)
    if port == 0:
        raise ValidationFailed("The URL's port must be 1-65535", field=field)
    return parts


def resolve(url: str, *, allow_private: bool, field: str = "url") -> Target:
    """Check the URL and resolve its host (blocking: call it from a thread); every address must be public unless
    `allow_private`. Raises ValidationFailed naming `field`."""
    parts = check_syntax(url, allow_private=allow_private, field=field)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ValidationFailed(f"The URL's host {host!r} cannot be resolved", field=field) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise ValidationFailed(
                    f"The URL's host {host!r} resolves to {address}, which is not a public address; Cloudplane calls "
                    "public addresses only",
                    field=field,
                )
    if not addresses:
        raise ValidationFailed(f"The URL's host {host!r} cannot be resolved", field=field)
    return Target(url=url, scheme=parts.scheme, host=host, port=port, addresses=tuple(addresses))
