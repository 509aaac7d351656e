"""CloudVPS Pro's networking: a VPS's addresses and firewall rules, replaced as a whole, checked rule by rule, and
applied to its machine by a durable operation."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from cloudplane.db.tables import Event
from cloudplane.providers.base import FirewallRule
from tests.conftest import Tenant, eventually
from tests.integration.test_cloudvps_vps import V1, api, cloudvps_plans, create_running_vps, error_of, vps_app

__all__ = ["api", "cloudvps_plans", "vps_app"]  # fixtures, used by name

RULES = [
    {"action": "accept", "protocol": "tcp", "port": 80, "source": "0.0.0.0/0", "description": "HTTP access"},
    {"action": "accept", "protocol": "tcp", "port": "8000-8100", "source": "203.0.113.0/24"},
    {"action": "drop", "protocol": "icmp"},
    {"action": "accept", "protocol": "udp", "source": "198.51.100.7"},
]


async def put_rules(api: httpx.AsyncClient, tenant: Tenant, vps_id: str, rules: list[Any]) -> httpx.Response:
    return await api.put(f"{V1}/vps/{vps_id}/network", json={"firewall_rules": rules}, headers=tenant.headers)


async def operation(api: httpx.AsyncClient, tenant: Tenant, op_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return (await api.get(f"{V1}/operations/{op_id}", headers=tenant.headers)).json()["data"]

    return await eventually(probe, lambda op: op["status"] in ("succeeded", "failed"))


def machine_rules(core: Any, tenant: Tenant, vps_id: str) -> list[FirewallRule]:
    simulator = core.providers.get("simulator")
    ref = _ref_of(core, int(vps_id.removeprefix("vps-")))
    return simulator.firewall(ref)


def _ref_of(core: Any, server_id: int) -> str:
    from cloudplane.db.tables import Server

    with core.db.connect() as conn:
        return conn.scalar(select(Server.provider_ref).where(Server.id == server_id))


async def test_the_network_shows_the_addresses_and_no_rules_at_first(api, tenant) -> None:
    vps = await create_running_vps(api, tenant)
    r = await api.get(f"{V1}/vps/{vps['id']}/network", headers=tenant.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    data = body["data"]
    assert data["vps_id"] == vps["id"] and data["firewall_rules"] == []
    assert data["ip_addresses"] == {"public": vps["ip_address"], "private": vps["private_ip"], "extra": []}
    assert data["ip_addresses"]["public"]


async def test_rules_are_replaced_shown_and_applied_to_the_machine(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    r = await put_rules(api, tenant, vps["id"], RULES)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    shown = [
        {"action": "accept", "protocol": "tcp", "port": 80, "source": "0.0.0.0/0", "description": "HTTP access"},
        {"action": "accept", "protocol": "tcp", "port": "8000-8100", "source": "203.0.113.0/24", "description": None},
        {"action": "drop", "protocol": "icmp", "port": None, "source": "0.0.0.0/0", "description": None},
        {"action": "accept", "protocol": "udp", "port": None, "source": "198.51.100.7/32", "description": None},
    ]
    assert data["firewall_rules"] == shown
    op = await operation(api, tenant, data["operation_id"])
    assert (op["kind"], op["status"]) == ("firewall", "succeeded"), op
    got = (await api.get(f"{V1}/vps/{vps['id']}/network", headers=tenant.headers)).json()["data"]
    assert got["firewall_rules"] == shown and got["operation_id"] is None
    assert machine_rules(core, tenant, vps["id"]) == [
        FirewallRule("accept", "tcp", "0.0.0.0/0", 80, 80),
        FirewallRule("accept", "tcp", "203.0.113.0/24", 8000, 8100),
        FirewallRule("drop", "icmp", "0.0.0.0/0", None, None),
        FirewallRule("accept", "udp", "198.51.100.7/32", None, None),
    ]
    with core.db.connect() as conn:
        types = set(conn.scalars(select(Event.type).where(Event.operation_id == data["operation_id"])))
    assert types == {"vps.firewall.update_requested", "vps.firewall.updated"}

    # Replaced as a whole; no rules allow everything again.
    r = await put_rules(api, tenant, vps["id"], [])
    assert r.status_code == 200 and r.json()["data"]["firewall_rules"] == []
    await operation(api, tenant, r.json()["data"]["operation_id"])
    assert machine_rules(core, tenant, vps["id"]) == []


async def test_a_bad_rule_is_a_422_naming_its_index_and_field(api, tenant) -> None:
    vps = await create_running_vps(api, tenant)
    good = {"action": "accept", "protocol": "tcp", "port": 22}
    cases = [
        ({"action": "allow", "protocol": "tcp"}, "action"),
        ({"action": "accept", "protocol": "sctp"}, "protocol"),
        ({"action": "accept", "protocol": "tcp", "port": 70000}, "port"),
        ({"action": "accept", "protocol": "tcp", "port": "9000-8000"}, "port"),
        ({"action": "accept", "protocol": "tcp", "port": "http"}, "port"),
        ({"action": "accept", "protocol": "tcp", "port": 0}, "port"),
        ({"action": "drop", "protocol": "icmp", "port": 8}, "port"),
        ({"action": "accept", "protocol": "tcp", "source": "10.0.0.1/8"}, "source"),
        ({"action": "accept", "protocol": "tcp", "source": "2001:db8::/32"}, "source"),
        ({"action": "accept", "protocol": "tcp", "source": "anywhere"}, "source"),
    ]
    for bad, field in cases:
        r = await put_rules(api, tenant, vps["id"], [good, good, bad])
        assert r.status_code == 422, (bad, r.text)
        error = error_of(r)
        assert error["details"]["field"] == f"firewall_rules[2].{field}", (bad, error)
        assert f"firewall_rules[2].{field}" in error["message"]
    # Unknown fields and too many rules are refused too; nothing was stored.
    r = await put_rules(api, tenant, vps["id"], [{**good, "interface": "eth0"}])
    assert r.status_code == 422
    r = await put_rules(api, tenant, vps["id"], [good] * 51)
    assert r.status_code == 422 and "firewall_rules" in error_of(r)["details"]["field"]
    got = (await api.get(f"{V1}/vps/{vps['id']}/network", headers=tenant.headers)).json()["data"]
    assert got["firewall_rules"] == []


async def rent_gpu_vps(api: httpx.AsyncClient, tenant: Tenant) -> str:
    """A GPU instance rented from the simulated marketplace, by its VPS id."""
    offers = (await api.get(f"{V1}/offers/search", params={"available": True}, headers=tenant.headers)).json()["data"]
    for offer in reversed(offers):  # offers other tests rented may still be listed (409 on rent)
        rented = await api.post(
            f"{V1}/instances",
            json={"provider": "vast_ai", "offer_id": offer["provider_id"], "image": "pytorch/pytorch:latest"},
            headers=tenant.headers,
        )
        if rented.status_code != 409:
            break
    assert rented.status_code == 201, rented.text
    return "vps-" + rented.json()["data"]["id"].rpartition("_")[2]


async def test_a_rented_gpu_instance_refuses_firewall_rules_with_the_reason(api, make_tenant) -> None:
    tenant = make_tenant()
    vps_id = await rent_gpu_vps(api, tenant)
    r = await put_rules(api, tenant, vps_id, [{"action": "drop", "protocol": "tcp", "port": 22}])
    assert r.status_code == 409, r.text
    assert "cannot filter traffic with firewall rules" in error_of(r)["message"]
    got = (await api.get(f"{V1}/vps/{vps_id}/network", headers=tenant.headers)).json()["data"]
    assert got["firewall_rules"] == []
    await api.delete(f"{V1}/vps/{vps_id}", headers=tenant.headers)
