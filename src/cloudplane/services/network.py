"""A server's network: its addresses and its inbound firewall rules, which a durable `firewall` operation applies to
its machine (workflows/network.py), and its extra addresses, each taken from its location's pool and attached to its
machine by a durable `attach_ip` operation.

No rules: every inbound packet passes. With rules: an inbound packet is decided by the first rule it matches, and
dropped when it matches none, except replies to connections the server opened itself (as DigitalOcean's cloud
firewalls do)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.db.tables import FirewallRule, IpAddress, Server, utcnow
from cloudplane.domain.addresses import DEFAULT_POOLS, AddressPool, top_quarter
from cloudplane.domain.errors import AddressPoolExhausted, InvalidState, NoAddressPool, ValidationFailed
from cloudplane.domain.states import TaskState
from cloudplane.providers.base import Feature
from cloudplane.services import operations
from cloudplane.services.accounts import Principal
from cloudplane.services.servers import get_server_in, require_capability
from cloudplane.services.tenancy import mine

MAX_RULES = 50
ACTIONS = ("accept", "drop")
PROTOCOLS = ("tcp", "udp", "icmp")
ANYWHERE = "0.0.0.0/0"
_PORTS = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?$")


@dataclass(frozen=True)
class RuleSpec:
    """A rule as a request gives it: `port` a number, a "from-to" range, or None (every port; icmp has none)."""

    action: Any
    protocol: Any
    port: Any = None
    source: Any = None
    description: str | None = None


@dataclass(frozen=True)
class Rule:
    action: str
    protocol: str
    # Both None: every port (always so for icmp).
    port_from: int | None
    port_to: int | None
    source: str
    description: str | None


@dataclass(frozen=True)
class NetworkView:
    server_id: int
    public_ipv4: str | None
    private_ipv4: str | None
    extra_ipv4: tuple[str, ...]
    firewall_rules: tuple[Rule, ...]
    # The operation applying the rules, in the reply that changed them; None on reads.
    operation_id: str | None = None


def _ports(value: Any, field: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and (match := _PORTS.match(value.strip())):
        low = int(match.group(1))
        high = int(match.group(2) or low)
    else:
        raise ValidationFailed(
            f'{field} must be a number (80) or a range ("8000-8100")',
            field=field,
            port=value if value is None else str(value),
        )
    if not 1 <= low <= high <= 65535:
        raise ValidationFailed(
            f"{field} must be 1 to 65535, and a range's first port no greater than its last",
            field=field,
            port=str(value),
        )
    return low, high


def parse_rule(spec: RuleSpec, index: int) -> Rule:
    """One rule, checked; a refusal names the rule by its index and field: `firewall_rules[2].port`."""
    at = f"firewall_rules[{index}]"
    if spec.action not in ACTIONS:
        raise ValidationFailed(f"{at}.action must be one of: {', '.join(ACTIONS)}", field=f"{at}.action")
    if spec.protocol not in PROTOCOLS:
        raise ValidationFailed(f"{at}.protocol must be one of: {', '.join(PROTOCOLS)}", field=f"{at}.protocol")
    port_from = port_to = None
    if spec.protocol == "icmp":
        if spec.port is not None:
            raise ValidationFailed(f"{at}.port: icmp has no ports; leave port out", field=f"{at}.port")
    elif spec.port is not None:
        port_from, port_to = _ports(spec.port, f"{at}.port")
    source = ANYWHERE if spec.source is None else spec.source
    try:
        if not isinstance(source, str):
            raise ValueError("not a string")
        network = ipaddress.IPv4Network(source.strip(), strict=True)
    except ValueError as error:
        raise ValidationFailed(
            f'{at}.source must be an IPv4 network such as "203.0.113.0/24" or an address: {error}',
            field=f"{at}.source",
        ) from None
    return Rule(spec.action, spec.protocol, port_from, port_to, str(network), spec.description)


def parse_rules(specs: Sequence[RuleSpec]) -> list[Rule]:
    if len(specs) > MAX_RULES:
        raise ValidationFailed(
            f"At most {MAX_RULES} firewall rules per VPS", field="firewall_rules", maximum=MAX_RULES, given=len(specs)
        )
    return [parse_rule(spec, index) for index, spec in enumerate(specs)]


def rules_of(session: Session, principal: Principal, server_id: int) -> tuple[Rule, ...]:
    rows = session.scalars(
        select(FirewallRule)
        .where(FirewallRule.server_id == server_id, mine(FirewallRule, principal))
        .order_by(FirewallRule.position)
    )
    return tuple(Rule(r.action, r.protocol, r.port_from, r.port_to, r.source, r.description) for r in rows)


def _view(core: Core, session: Session, principal: Principal, server_id: int) -> NetworkView:
    server = get_server_in(core, session, principal, server_id)
    return NetworkView(
        server_id=server_id,
        public_ipv4=server.ipv4,
        private_ipv4=server.private_ipv4,
        extra_ipv4=extra_addresses(session, principal, server_id),
        firewall_rules=rules_of(session, principal, server_id),
    )


def get_network(core: Core, principal: Principal, server_id: int) -> NetworkView:
    with core.db.read() as s:
        return _view(core, s, principal, server_id)


def set_firewall(core: Core, principal: Principal, server_id: int, specs: Sequence[RuleSpec]) -> NetworkView:
    """Replace the server's rules and start the operation that applies them to its machine."""
    rules = parse_rules(specs)
    with core.db.write() as s:
        # A suspended server, or one whose provider filters nothing (libvirt for now, a rented instance): 409.
        require_capability(core, s, principal, server_id, Feature.FIREWALL)
        # Locks the server's row: concurrent replacements of its rules take turns (PostgreSQL), never interleave.
        s.execute(update(Server).where(Server.id == server_id, mine(Server, principal)).values(updated_at=utcnow()))
        s.execute(delete(FirewallRule).where(FirewallRule.server_id == server_id, mine(FirewallRule, principal)))
        s.add_all(
            FirewallRule(
                account_id=principal.account_id,
                server_id=server_id,
                position=position,
                action=r.action,
                protocol=r.protocol,
                port_from=r.port_from,
                port_to=r.port_to,
                source=r.source,
                description=r.description,
            )
            for position, r in enumerate(rules)
        )
        s.flush()
        op = operations.new_operation(s, account_id=principal.account_id, kind="firewall", server_id=server_id)
        view = _view(core, s, principal, server_id)
    operations.launch(op)
    return replace(view, operation_id=op.id)


@dataclass(frozen=True)
class ExtraAddress:
    server_id: int
    address: str
    # The operation attaching it to the server's machine.
    operation_id: str


# Addresses of a pool looked up at a time when searching it for a free one, lowest first.
_BATCH = 256


def extra_addresses(session: Session, principal: Principal, server_id: int) -> tuple[str, ...]:
    rows = session.scalars(
        select(IpAddress.address)
        .where(IpAddress.server_id == server_id, mine(IpAddress, principal))
        .order_by(IpAddress.id)
    )
    return tuple(rows)


def pool_of(settings: Settings, location: str, provider: str) -> AddressPool | None:
    """The location's pool: as CLOUDPLANE_ADDRESS_POOLS gives it (empty: none), else the top quarter of the LXC
    bridge's subnet on LXC (which LXC never gives a new container), else the location's documentation range."""
    configured = settings.address_pools.get(location)
    if configured is not None:
        return AddressPool.parse(configured) if configured.strip() else None
    if provider == "lxc":
        return top_quarter(ipaddress.IPv4Network(settings.lxc_subnet))
    default = DEFAULT_POOLS.get(location)
    return AddressPool.parse(default) if default else None


def _take_free(session: Session, pool: AddressPool, location: str, row: dict[str, Any]) -> str:
    """The lowest address of the pool no server holds, inserted for the server. Read, then inserted in a
    savepoint: of two transactions that read the same free address, the unique constraint fails the second,
    which takes the next."""
    candidates = pool.addresses()
    while batch := [a for _, a in zip(range(_BATCH), candidates, strict=False)]:
        taken = set(session.scalars(select(IpAddress.address).where(IpAddress.address.in_(batch))))
        for address in batch:
            if address in taken:
                continue
            try:
                with session.begin_nested():
                    session.add(IpAddress(address=address, **row))
            except IntegrityError:
                continue
            return address
    raise AddressPoolExhausted(
        f"No free address left in {location}'s pool ({pool.text}, {pool.size} addresses)",
        location=location,
        pool=pool.text,
    )


def attach_extra_ip(core: Core, principal: Principal, server_id: int) -> ExtraAddress:
    """Take the lowest free address of the server's location's pool for the server and start the operation that
    attaches it to its machine. 409 when the provider cannot, or the location has no pool or no free address."""
    with core.db.write() as s:
        require_capability(core, s, principal, server_id, Feature.EXTRA_IPS)
        server = get_server_in(core, s, principal, server_id)
        if server.task_state == TaskState.DELETING:
            raise InvalidState("The VPS is being deleted", server_id=server_id, task_state=server.task_state)
        location = server.location.slug if server.location is not None else server.region or ""
        pool = pool_of(core.settings, location, server.provider)
        if pool is None:
            raise NoAddressPool(f"Location {location} has no pool of extra IP addresses", location=location)
        address = _take_free(s, pool, location, {"account_id": principal.account_id, "server_id": server_id})
        op = operations.new_operation(
            s, account_id=principal.account_id, kind="attach_ip", server_id=server_id, params={"address": address}
        )
    operations.launch(op)
    return ExtraAddress(server_id, address, op.id)
