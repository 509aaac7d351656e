"""A server's network: its addresses and its inbound firewall rules, which a durable `firewall` operation applies to
its machine (workflows/network.py).

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
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import FirewallRule, Server, utcnow
from cloudplane.domain.errors import ValidationFailed
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
        extra_ipv4=(),
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
