"""CloudVPS Pro's extra IPs: POST /vps/{id}/network/ip takes an address from the location's pool, attaches it to the
machine by a durable operation, and the address goes back to the pool when the VPS is deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloudplane.db.tables import Event
from tests.conftest import Tenant, eventually
from tests.integration.test_cloudvps_network import _ref_of, operation, rent_gpu_vps
from tests.integration.test_cloudvps_vps import V1, api, cloudvps_plans, create_running_vps, error_of, vps_app

__all__ = ["api", "cloudvps_plans", "vps_app"]  # fixtures, used by name


@pytest.fixture
def pools(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Give locations pools of this test's own (TEST-NET-1 ranges no other test takes)."""

    def set_pools(**pools: str) -> None:
        monkeypatch.setattr(core.settings, "address_pools", pools)

    return set_pools


async def attach(api: httpx.AsyncClient, tenant: Tenant, vps_id: str) -> httpx.Response:
    return await api.post(f"{V1}/vps/{vps_id}/network/ip", headers=tenant.headers)


async def test_an_extra_ip_comes_from_the_pool_is_attached_and_listed(api, tenant, core, pools) -> None:
    pools(nyc1="192.0.2.0/29")
    vps = await create_running_vps(api, tenant)
    r = await attach(api, tenant, vps["id"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True
    data = body["data"]
    # The lowest usable address of the /29 first, then the next.
    assert (data["vps_id"], data["ip_address"]) == (vps["id"], "192.0.2.1")
    op = await operation(api, tenant, data["operation_id"])
    assert (op["kind"], op["status"]) == ("attach_ip", "succeeded"), op
    second = (await attach(api, tenant, vps["id"])).json()["data"]
    assert second["ip_address"] == "192.0.2.2"
    await operation(api, tenant, second["operation_id"])

    got = (await api.get(f"{V1}/vps/{vps['id']}/network", headers=tenant.headers)).json()["data"]
    assert got["ip_addresses"]["extra"] == ["192.0.2.1", "192.0.2.2"]
    assert got["ip_addresses"]["public"] == vps["ip_address"]
    # The machine has them (the simulator records what it was given).
    simulator = core.providers.get("simulator")
    assert simulator.addresses(_ref_of(core, int(vps["id"].removeprefix("vps-")))) == ["192.0.2.1", "192.0.2.2"]
    with core.db.connect() as conn:
        types = set(conn.scalars(select(Event.type).where(Event.operation_id == data["operation_id"])))
    assert types == {"vps.ip.attach_requested", "vps.ip.attached"}


async def test_an_exhausted_pool_and_a_location_without_one_are_409s(api, tenant, pools) -> None:
    pools(nyc1="192.0.2.16-192.0.2.17")
    vps = await create_running_vps(api, tenant)
    assert [(await attach(api, tenant, vps["id"])).status_code for _ in range(2)] == [201, 201]
    r = await attach(api, tenant, vps["id"])
    assert r.status_code == 409, r.text
    error = error_of(r)
    assert error["code"] == "ADDRESS_POOL_EXHAUSTED"
    assert "nyc1" in error["message"] and "192.0.2.16-192.0.2.17" in error["message"]

    pools(nyc1="")  # configured empty: no pool at all there
    r = await attach(api, tenant, vps["id"])
    assert r.status_code == 409, r.text
    assert error_of(r)["code"] == "NO_ADDRESS_POOL" and "nyc1" in error_of(r)["message"]
    got = (await api.get(f"{V1}/vps/{vps['id']}/network", headers=tenant.headers)).json()["data"]
    assert got["ip_addresses"]["extra"] == ["192.0.2.16", "192.0.2.17"]


async def test_concurrent_requests_never_get_the_same_address(api, make_tenant, pools) -> None:
    pools(nyc1="192.0.2.32/28")  # 14 usable addresses
    tenants = [make_tenant() for _ in range(2)]
    servers = [await create_running_vps(api, t) for t in tenants]
    replies = await asyncio.gather(*(attach(api, tenants[i % 2], servers[i % 2]["id"]) for i in range(16)))
    assert sorted(r.status_code for r in replies) == [201] * 14 + [409] * 2, [r.text for r in replies]
    given = [r.json()["data"]["ip_address"] for r in replies if r.status_code == 201]
    assert len(set(given)) == 14
    assert {error_of(r)["code"] for r in replies if r.status_code == 409} == {"ADDRESS_POOL_EXHAUSTED"}


async def test_another_tenants_vps_is_a_404_and_gets_nothing(api, make_tenant, pools) -> None:
    pools(nyc1="192.0.2.64/29")
    owner, intruder = make_tenant(), make_tenant()
    vps = await create_running_vps(api, owner)
    r = await attach(api, intruder, vps["id"])
    assert r.status_code == 404, r.text
    got = (await api.get(f"{V1}/vps/{vps['id']}/network", headers=owner.headers)).json()["data"]
    assert got["ip_addresses"]["extra"] == []
    # Nothing was taken from the pool: the owner still gets its first address.
    assert (await attach(api, owner, vps["id"])).json()["data"]["ip_address"] == "192.0.2.65"


async def test_a_deleted_vps_gives_its_addresses_back(api, tenant, pools) -> None:
    pools(nyc1="192.0.2.80-192.0.2.80")
    vps = await create_running_vps(api, tenant)
    assert (await attach(api, tenant, vps["id"])).status_code == 201
    other = await create_running_vps(api, tenant)
    assert (await attach(api, tenant, other["id"])).status_code == 409
    assert (await api.delete(f"{V1}/vps/{vps['id']}", headers=tenant.headers)).status_code == 200

    async def status() -> int:
        return (await api.get(f"{V1}/vps/{vps['id']}", headers=tenant.headers)).status_code

    await eventually(status, lambda code: code == 404)
    r = await attach(api, tenant, other["id"])
    assert r.status_code == 201, r.text
    assert r.json()["data"]["ip_address"] == "192.0.2.80"


async def test_a_rented_gpu_instance_refuses_extra_ips_with_the_reason(api, make_tenant) -> None:
    tenant = make_tenant()
    vps_id = await rent_gpu_vps(api, tenant)
    r = await attach(api, tenant, vps_id)
    assert r.status_code == 409, r.text
    assert "cannot attach extra IP addresses" in error_of(r)["message"]
    got = (await api.get(f"{V1}/vps/{vps_id}/network", headers=tenant.headers)).json()["data"]
    assert got["ip_addresses"]["extra"] == []
    await api.delete(f"{V1}/vps/{vps_id}", headers=tenant.headers)


async def test_a_retried_request_with_its_idempotency_key_takes_one_address(api, tenant, pools) -> None:
    pools(nyc1="192.0.2.96/29")
    vps = await create_running_vps(api, tenant)
    headers = {**tenant.headers, "Idempotency-Key": "extra-ip-once"}
    replies = [await api.post(f"{V1}/vps/{vps['id']}/network/ip", headers=headers) for _ in range(2)]
    assert [r.status_code for r in replies] == [201, 201]
    assert replies[0].json() == replies[1].json() and replies[1].headers.get("Idempotent-Replayed") == "true"
    got = (await api.get(f"{V1}/vps/{vps['id']}/network", headers=tenant.headers)).json()["data"]
    assert got["ip_addresses"]["extra"] == ["192.0.2.97"]
