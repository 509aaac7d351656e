"""LXC containers' firewalls: nftables rules on the host, outside the container's reach, in a table of Cloudplane's
own per bridge (`inet cloudplane_<bridge>`).

A verdict map sends every packet addressed to a filtered container (forwarded, bridged or from the host itself) to
that container's chain: replies to its own connections pass (conntrack), then its rules in order, then a drop. A
container without rules has no chain and no map entry: everything passes. Keyed on the container's addresses, not
its veth, whose name changes at every start. Each change is one `nft -f` transaction, so a container's rules are
replaced at once or not at all, and every script here can run again (a retried or re-run operation).

Conntrack is only in the IPv4 hooks: this kernel family (`bridge`) has none without nf_conntrack_bridge, which many
kernels lack. Bridged traffic reaches the IPv4 hooks through br_netfilter (`bridge-nf-call-iptables`), which
`ensure_bridge_filtering` turns on.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from cloudplane.domain.errors import ProviderError
from cloudplane.providers.base import FirewallRule

BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
MAP = "fw_targets"


def table_name(bridge: str) -> str:
    return f"cloudplane_{bridge}"


def chain_name(container: str) -> str:
    return f"fw-{container}"


def _nft(script: str) -> None:
    try:
        done = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ProviderError(
            "nft is not installed: apt-get install nftables (LXC firewalls are nftables rules)", retryable=False
        ) from None
    if done.returncode != 0:
        raise ProviderError(f"nft refused the firewall rules: {done.stderr.strip()}", retryable=False)


def ensure_bridge_filtering() -> None:
    """Bridged IPv4 traffic through the IPv4 netfilter hooks (br_netfilter), where conntrack is."""
    if not BRIDGE_NF.exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    try:
        if BRIDGE_NF.read_text().strip() != "1":
            BRIDGE_NF.write_text("1\n")
    except OSError as error:
        raise ProviderError(
            f"Cannot filter bridged traffic: br_netfilter is unavailable ({error}); modprobe br_netfilter",
            retryable=False,
        ) from None


def _base(table: str) -> list[str]:
    lines = [f"add table inet {table}", f"add map inet {table} {MAP} {{ type ipv4_addr : verdict; }}"]
    for hook in ("forward", "output"):
        lines += [
            f"add chain inet {table} {hook} {{ type filter hook {hook} priority filter; policy accept; }}",
            f"flush chain inet {table} {hook}",
            f"add rule inet {table} {hook} ip daddr vmap @{MAP}",
        ]
    return lines


def _match(rule: FirewallRule) -> str:
    parts = [] if rule.source == "0.0.0.0/0" else [f"ip saddr {rule.source}"]
    if rule.protocol == "icmp" or rule.port_from is None:
        parts.append(f"ip protocol {rule.protocol}")
    else:
        ports = str(rule.port_from) if rule.port_to in (None, rule.port_from) else f"{rule.port_from}-{rule.port_to}"
        parts.append(f"{rule.protocol} dport {ports}")
    return " ".join(parts)


def script(bridge: str, container: str, addresses: Sequence[str], rules: Sequence[FirewallRule]) -> str:
    """The transaction that gives the container these rules (none: removes its filter)."""
    table, chain = table_name(bridge), chain_name(container)
    lines = _base(table)
    # Removed first, each made to exist so that removing it cannot fail, then made again if there are rules.
    lines += [f"add chain inet {table} {chain}"]
    for address in addresses:
        lines += [
            f"add element inet {table} {MAP} {{ {address} : jump {chain} }}",
            f"delete element inet {table} {MAP} {{ {address} }}",
        ]
    lines += [f"flush chain inet {table} {chain}", f"delete chain inet {table} {chain}"]
    if rules:
        lines += [
            f"add chain inet {table} {chain}",
            f"add rule inet {table} {chain} ct state established,related accept",
        ]
        lines += [f"add rule inet {table} {chain} {_match(r)} {r.action}" for r in rules]
        lines += [f"add rule inet {table} {chain} drop"]
        lines += [f"add element inet {table} {MAP} {{ {a} : jump {chain} }}" for a in addresses]
    return "\n".join(lines) + "\n"


def apply(bridge: str, container: str, addresses: Sequence[str], rules: Sequence[FirewallRule]) -> None:
    """Replace the container's rules on the host in one transaction; idempotent."""
    if rules:
        ensure_bridge_filtering()
    _nft(script(bridge, container, addresses, rules))


def remove_table(bridge: str) -> None:
    """Every container's rules of this bridge (the bridge is going away)."""
    table = table_name(bridge)
    try:
        subprocess.run(
            ["nft", "-f", "-"], input=f"add table inet {table}\ndelete table inet {table}\n", capture_output=True,
            text=True, check=False,
        )  # fmt: skip
    except FileNotFoundError:
        pass
