"""The CloudVPS Pro face's VPS and plan routes: the document's shapes, over the same servers LetsCloud shows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
from fastapi import routing
from sqlalchemy import select

from cloudplane.api.cloudvps import vps
from cloudplane.app import create_app, v1_document
from cloudplane.db.tables import Plan
from tests.conftest import SERVER_BODY, Tenant, eventually
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key
from tests.integration.test_locations import placed

V1 = "/api/v1"
# The CloudVPS plans the catalog seed is to carry; added here when the seed of this database lacks them.
CLOUDVPS_PLANS = [
    ("starter", "Starter VPS", 1, 2048, 20, 9.99),
    ("professional", "Professional VPS", 2, 4096, 50, 19.99),
    ("business", "Business VPS", 4, 8192, 100, 39.99),
    ("enterprise", "Enterprise VPS", 8, 16384, 200, 79.99),
]
DOCUMENT_BODY = {
    "name": "My Web Server",
    "plan_id": "plan-professional",
    "operating_system": "ubuntu-22.04",
}


@pytest.fixture(scope="module")
def vps_app(core) -> Any:
    app = create_app(core)
    # Until app.py includes the router itself; never twice.
    if not [r for r in routing.iter_route_contexts(app.routes) if r.path == f"{V1}/vps"]:
        app.include_router(vps.router, prefix=V1)
    return app


@pytest.fixture(scope="module")
def cloudvps_plans(core) -> None:
    with core.db.write() as s:
        present = set(s.scalars(select(Plan.slug)))
        s.add_all(
            Plan(slug=a, name=b, cpu=c, ram_mb=r, disk_gb=d, price_monthly=p)
            for a, b, c, r, d, p in CLOUDVPS_PLANS
            if a not in present
        )
    core.catalog.invalidate()


@pytest.fixture
async def api(vps_app, cloudvps_plans) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=vps_app), base_url="http://testserver") as c:
        yield c


async def create_vps(api: httpx.AsyncClient, tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    r = await api.post(f"{V1}/vps", json={**DOCUMENT_BODY, **overrides}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def wait_for(api: httpx.AsyncClient, tenant: Tenant, vps_id: str, status: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        return (await api.get(f"{V1}/vps/{vps_id}", headers=tenant.headers)).json()["data"]

    return await eventually(get, lambda v: v["status"] == status)


async def create_running_vps(api: httpx.AsyncClient, tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    return await wait_for(api, tenant, (await create_vps(api, tenant, **overrides))["id"], "running")


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert body["success"] is False, body
    return body["error"]


async def test_a_vps_made_here_is_a_letscloud_server(api, tenant) -> None:
    key = ed25519_public_key()
    r = await api.post(f"{V1}/vps", json={**DOCUMENT_BODY, "ssh_keys": [key]}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    assert r.json()["success"] is True and r.json()["message"] == "VPS creation started"
    made = r.json()["data"]
    assert made["id"].startswith("vps-") and made["status"] == "creating" and made["name"] == "My Web Server"
    assert made["operating_system"] == "Ubuntu 22.04 LTS" and made["plan_id"] == "plan-professional"
    assert made["specifications"] == {"cpu": 2, "ram": 4, "storage": 50, "bandwidth": 2000}
    assert made["pricing"] == {"monthly_price": 19.99, "currency": "USD", "hourly_price": None}
    assert made["location"] == "nyc1" and made["hostname"] == "my-web-server" and made["gpu"] is None
    assert len(made["root_password"]) >= 16
    created = datetime.fromisoformat(made["created_at"])
    assert datetime.fromisoformat(made["next_billing_date"]) == vps.next_billing_date(created, datetime.now(UTC))

    running = await wait_for(api, tenant, made["id"], "running")
    assert running["ip_address"] and running["private_ip"] and "root_password" not in running
    server = (await api.get(f"/api/servers/{made['id'].removeprefix('vps-')}", headers=tenant.headers)).json()
    assert server["label"] == "My Web Server" and server["status"] == "running"
    assert server["plan"]["slug"] == "professional" and server["image"]["slug"] == "ubuntu-22-04"
    assert [k["public_key"].split()[1] for k in server["ssh_keys"]] == [key.split()[1]]


async def test_a_letscloud_server_is_a_vps(api, make_tenant) -> None:
    tenant = make_tenant()
    r = await api.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    server_id = r.json()["id"]
    by_prefixed = await wait_for(api, tenant, f"vps-{server_id}", "running")
    assert (await api.get(f"{V1}/vps/{server_id}", headers=tenant.headers)).json()["data"] == by_prefixed
    assert by_prefixed["id"] == f"vps-{server_id}" and by_prefixed["name"] == "My Web Server"
    assert by_prefixed["hostname"] == "webserver-01" and by_prefixed["plan_id"] == "plan-basic-1gb"
    assert by_prefixed["specifications"] == {"cpu": 1, "ram": 1, "storage": 25, "bandwidth": 500}
    assert by_prefixed["pricing"]["monthly_price"] == 5.0
    listed = (await api.get(f"{V1}/vps", headers=tenant.headers)).json()
    assert [v["id"] for v in listed["data"]] == [f"vps-{server_id}"]
    assert listed["pagination"] == {"page": 1, "limit": 20, "total": 1, "has_next": False, "has_prev": False}


async def test_the_documents_curl_example_takes_the_default_system_and_location(api, tenant) -> None:
    made = await create_vps(api, tenant, name="My Server", operating_system=None)
    assert made["operating_system"] == "Ubuntu 22.04 LTS" and made["location"] == "nyc1"
    bare = await api.post(f"{V1}/vps", json={"name": "Bare", "plan_id": "starter"}, headers=tenant.headers)
    assert bare.status_code == 201 and bare.json()["data"]["plan_id"] == "plan-starter"
    other = await create_vps(api, tenant, name="Elsewhere", operating_system="debian-12", location="fra1")
    assert other["operating_system"] == "Debian 12" and other["location"] == "fra1"


async def test_list_pages_filters_and_sorts(api, make_tenant) -> None:
    tenant = make_tenant()
    made = {}
    for name in ("bravo", "Alpha", "charlie"):
        made[name] = await create_running_vps(api, tenant, name=name)
    await api.post(f"{V1}/vps/{made['Alpha']['id']}/stop", headers=tenant.headers)
    await wait_for(api, tenant, made["Alpha"]["id"], "stopped")

    async def names(**params: Any) -> list[str]:
        r = await api.get(f"{V1}/vps", params=params, headers=tenant.headers)
        assert r.status_code == 200, r.text
        return [v["name"] for v in r.json()["data"]]

    assert await names() == ["charlie", "Alpha", "bravo"], "newest first by default"
    assert await names(order="asc") == ["bravo", "Alpha", "charlie"]
    assert await names(sort="name") == ["charlie", "bravo", "Alpha"]
    assert await names(sort="name", order="asc") == ["Alpha", "bravo", "charlie"], "names sort ignoring case"
    assert await names(sort="status", order="asc") == ["bravo", "charlie", "Alpha"], "running < stopped, then id"
    assert await names(status="stopped") == ["Alpha"]
    assert await names(status="running", order="asc") == ["bravo", "charlie"]
    assert await names(status="deleting") == []

    first = (await api.get(f"{V1}/vps", params={"limit": 2, "order": "asc"}, headers=tenant.headers)).json()
    assert [v["name"] for v in first["data"]] == ["bravo", "Alpha"]
    assert first["pagination"] == {"page": 1, "limit": 2, "total": 3, "has_next": True, "has_prev": False}
    second = (await api.get(f"{V1}/vps", params={"limit": 2, "page": 2, "order": "asc"}, headers=tenant.headers)).json()
    assert [v["name"] for v in second["data"]] == ["charlie"]
    assert second["pagination"] == {"page": 2, "limit": 2, "total": 3, "has_next": False, "has_prev": True}
    filtered = (await api.get(f"{V1}/vps", params={"status": "running", "limit": 1}, headers=tenant.headers)).json()
    assert filtered["pagination"]["total"] == 2 and filtered["pagination"]["has_next"] is True
    beyond = (await api.get(f"{V1}/vps", params={"page": 9}, headers=tenant.headers)).json()
    assert beyond["data"] == [] and beyond["pagination"]["has_prev"] is True

    for params, field in (
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"page": 0}, "page"),
        ({"status": "sleeping"}, "status"),
        ({"sort": "price"}, "sort"),
        ({"order": "up"}, "order"),
    ):
        r = await api.get(f"{V1}/vps", params=params, headers=tenant.headers)
        assert r.status_code == 422 and error_of(r)["details"]["field"] == field, (params, r.text)


async def test_start_stop_restart_follow_the_state_table(api, tenant) -> None:
    made = await create_running_vps(api, tenant)
    url = f"{V1}/vps/{made['id']}"

    r = await api.post(f"{url}/start", headers=tenant.headers)
    assert r.status_code == 409
    assert error_of(r)["code"] == "CONFLICT" and "must be stopped" in error_of(r)["message"]
    assert error_of(r)["details"]["status"] == "running"

    r = await api.post(f"{url}/stop", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["message"] == "VPS is stopping"
    assert r.json()["data"]["status"] == "stopping"
    await wait_for(api, tenant, made["id"], "stopped")
    for action in ("stop", "restart"):
        r = await api.post(f"{url}/{action}", headers=tenant.headers)
        assert r.status_code == 409 and error_of(r)["code"] == "CONFLICT", action

    r = await api.post(f"{url}/start", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "starting"
    await wait_for(api, tenant, made["id"], "running")
    r = await api.post(f"{url}/restart", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "rebooting"
    assert r.json()["message"] == "VPS is restarting"
    await wait_for(api, tenant, made["id"], "running")
    server = (await api.get(f"/api/servers/{made['id'].removeprefix('vps-')}", headers=tenant.headers)).json()
    assert server["status"] == "running" and server["task_state"] is None


async def test_put_renames(api, tenant) -> None:
    made = await create_vps(api, tenant)
    url = f"{V1}/vps/{made['id']}"
    r = await api.put(url, json={"name": "Updated Server Name"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "Updated Server Name" and r.json()["message"] == "VPS updated"
    assert r.json()["data"]["hostname"] == made["hostname"], "the hostname stays"
    server = (await api.get(f"/api/servers/{made['id'].removeprefix('vps-')}", headers=tenant.headers)).json()
    assert server["label"] == "Updated Server Name"
    for body, field in (({"name": "   "}, "name"), ({}, "name"), ({"name": "x", "plan_id": "plan-starter"}, "plan_id")):
        r = await api.put(url, json=body, headers=tenant.headers)
        assert r.status_code == 422 and error_of(r)["details"]["field"] == field, (body, r.text)


async def test_delete_starts_deletion_then_the_vps_is_gone(api, tenant) -> None:
    made = await create_running_vps(api, tenant)
    url = f"{V1}/vps/{made['id']}"
    r = await api.delete(url, params={"force": "true"}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "VPS deletion started" and r.json()["data"]["status"] == "deleting"
    again = await api.delete(url, headers=tenant.headers)
    assert again.status_code in (404, 409) and again.json()["success"] is False

    async def status() -> int:
        return (await api.get(url, headers=tenant.headers)).status_code

    await eventually(status, lambda code: code == 404)
    gone = await api.get(url, headers=tenant.headers)
    assert error_of(gone)["code"] == "NOT_FOUND"
    listed = (await api.get(f"{V1}/vps", headers=tenant.headers)).json()["data"]
    assert made["id"] not in [v["id"] for v in listed]


async def test_plans_in_the_documents_shape(api, tenant) -> None:
    r = await api.get(f"{V1}/plans", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["success"] is True
    plans = {p["id"]: p for p in r.json()["data"]}
    assert plans["plan-starter"] == {
        "id": "plan-starter",
        "name": "Starter VPS",
        "description": "Perfect for small websites",
        "specifications": {"cpu": 1, "ram": 2, "storage": 20, "bandwidth": 1000},
        "pricing": {"monthly": 9.99, "annually": 99.99, "currency": "USD"},
        "features": ["SSD Storage", "99.9% Uptime", "24/7 Support"],
        "available": True,
    }
    assert plans["plan-professional"]["pricing"] == {"monthly": 19.99, "annually": 199.99, "currency": "USD"}
    assert plans["plan-basic-1gb"]["pricing"]["annually"] == 49.99
    assert plans["plan-basic-1gb"]["description"] == "1 vCPU, 1 GB RAM and 25 GB SSD storage"
    for plan_id in ("plan-starter", "starter"):
        one = await api.get(f"{V1}/plans/{plan_id}", headers=tenant.headers)
        assert one.json() == {"success": True, "data": plans["plan-starter"]}
    missing = await api.get(f"{V1}/plans/plan-nope", headers=tenant.headers)
    assert missing.status_code == 404 and error_of(missing)["code"] == "NOT_FOUND"


def test_annual_price_and_next_billing_date() -> None:
    from decimal import Decimal

    from cloudplane.domain.pricing import annual_from_monthly

    assert [annual_from_monthly(Decimal(m)) for m in ("9.99", "19.99", "5.00", "24.00", "0.05")] == [
        Decimal("99.99"),
        Decimal("199.99"),
        Decimal("49.99"),
        Decimal("239.99"),
        Decimal("0.50"),
    ]
    jan31 = datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert vps.next_billing_date(jan31, jan31) == datetime(2025, 2, 28, 12, tzinfo=UTC)
    assert vps.next_billing_date(jan31, datetime(2025, 3, 1, tzinfo=UTC)) == datetime(2025, 3, 31, 12, tzinfo=UTC)
    assert vps.next_billing_date(jan31, datetime(2025, 12, 31, 13, tzinfo=UTC)) == datetime(2026, 1, 31, 12, tzinfo=UTC)
    jan1 = datetime(2025, 1, 1, tzinfo=UTC)
    assert vps.next_billing_date(jan1, datetime(2025, 1, 15, tzinfo=UTC)) == datetime(2025, 2, 1, tzinfo=UTC)
    assert vps.next_billing_date(jan1, datetime(2025, 2, 1, tzinfo=UTC)) == datetime(2025, 3, 1, tzinfo=UTC)


async def test_ssh_keys_are_added_to_the_account_once_and_reused(api, make_tenant) -> None:
    tenant = make_tenant()
    known, new = ed25519_public_key("old@laptop"), ed25519_public_key("new@desk")
    saved = await api.post("/api/ssh-keys", json={"title": "laptop", "key": known}, headers=tenant.headers)
    made = await create_vps(api, tenant, ssh_keys=[known, new, new])
    keys = (await api.get("/api/ssh-keys", headers=tenant.headers)).json()["ssh_keys"]
    assert [(k["title"], k["public_key"].split()[1]) for k in keys] == [
        ("laptop", known.split()[1]),
        ("new@desk", new.split()[1]),
    ]
    assert [k["id"] for k in made["ssh_keys"]] == [saved.json()["id"], keys[1]["id"]]

    again = await create_vps(api, tenant, name="Second", ssh_keys=[new])
    assert [k["id"] for k in again["ssh_keys"]] == [keys[1]["id"]]
    assert (await api.get("/api/ssh-keys", headers=tenant.headers)).json()["total"] == 2

    third = ed25519_public_key("third@box")
    r = await api.post(
        f"{V1}/vps", json={**DOCUMENT_BODY, "ssh_keys": [third, "ssh-rsa AAAA nope"]}, headers=tenant.headers
    )
    assert r.status_code == 422 and error_of(r)["details"]["field"] == "ssh_keys[1]", r.text
    assert (await api.get("/api/ssh-keys", headers=tenant.headers)).json()["total"] == 2, "nothing added"
    assert (await api.get(f"{V1}/vps", headers=tenant.headers)).json()["pagination"]["total"] == 2


async def test_bad_bodies_name_the_field(api, make_tenant) -> None:
    tenant = make_tenant()
    for body, status, field in (
        ({"plan_id": "plan-starter"}, 422, "name"),
        ({"name": "  ", "plan_id": "plan-starter"}, 422, "name"),
        ({"name": "x"}, 422, "plan_id"),
        ({**DOCUMENT_BODY, "colour": "blue"}, 422, "colour"),
        ({**DOCUMENT_BODY, "ssh_keys": "ssh-ed25519 AAAA"}, 422, "ssh_keys"),
        ({**DOCUMENT_BODY, "hostname": "-bad-"}, 422, "hostname"),
        ({**DOCUMENT_BODY, "plan_id": "plan-enormous"}, 404, "plan_id"),
        ({**DOCUMENT_BODY, "operating_system": "centos-8"}, 404, "operating_system"),
        ({**DOCUMENT_BODY, "location": "mars1"}, 404, "location"),
    ):
        r = await api.post(f"{V1}/vps", json=body, headers=tenant.headers)
        assert r.status_code == status and error_of(r)["details"]["field"] == field, (body, r.text)
    r = await api.post(
        f"{V1}/vps", content=b"{not json", headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422) and r.json()["success"] is False
    assert (await api.get(f"{V1}/vps", headers=tenant.headers)).json()["pagination"]["total"] == 0


@pytest.mark.parametrize("vps_id", ["vps-abc", "vps-0", "0", "vps-", "vps--1", "12a", "vps-" + "9" * 20, "vps-¹"])
async def test_ids_that_name_nothing_are_404(api, tenant, vps_id) -> None:
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/start"), ("PUT", "")):
        body = {"name": "x"} if method == "PUT" else None
        r = await api.request(method, f"{V1}/vps/{vps_id}{suffix}", json=body, headers=tenant.headers)
        assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND", (method, vps_id, r.text)


async def test_another_accounts_vps_is_404_and_unchanged(api, make_tenant) -> None:
    owner, intruder = make_tenant(), make_tenant()
    made = await create_running_vps(api, owner)
    url = f"{V1}/vps/{made['id']}"
    for method, suffix, body in (
        ("GET", "", None),
        ("PUT", "", {"name": "mine now"}),
        ("POST", "/stop", None),
        ("POST", "/restart", None),
        ("POST", "/start", None),
        ("DELETE", "", None),
    ):
        r = await api.request(method, url + suffix, json=body, headers=intruder.headers)
        assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND", (method, suffix, r.text)
    assert (await api.get(url, headers=owner.headers)).json()["data"] == made
    assert (await api.get(f"{V1}/vps", headers=intruder.headers)).json()["data"] == []


async def test_credentials_are_required(api) -> None:
    for method, path in (("GET", "/vps"), ("POST", "/vps"), ("GET", "/vps/vps-1"), ("GET", "/plans")):
        r = await api.request(method, V1 + path, json={})
        assert r.status_code == 401 and error_of(r)["code"] == "UNAUTHORIZED", (method, path)


async def test_a_rented_gpu_instance_is_a_vps(api, make_tenant) -> None:
    tenant = make_tenant()
    offers = (await api.get(f"{V1}/offers/search", params={"available": True}, headers=tenant.headers)).json()["data"]
    # Other tests rent offers and keep them; the search cache may still list those as available (409 on rent).
    for offer in reversed(offers):
        rented = await api.post(
            f"{V1}/instances",
            json={
                "provider": "vast_ai",
                "offer_id": offer["provider_id"],
                "image": "pytorch/pytorch:latest",
                "label": "gpu",
            },
            headers=tenant.headers,
        )
        if rented.status_code != 409:
            break
    assert rented.status_code == 201, rented.text
    vps_id = "vps-" + rented.json()["data"]["id"].rpartition("_")[2]
    running = await wait_for(api, tenant, vps_id, "running")
    assert (
        running["name"] == "gpu"
        and running["plan_id"] is None
        and running["operating_system"] == "pytorch/pytorch:latest"
    )
    assert running["gpu"] == {"model": offer["gpu_model"], "count": offer["gpu_count"]}
    assert running["specifications"]["bandwidth"] is None and running["specifications"]["cpu"] == offer["cpu_count"]
    assert running["pricing"]["hourly_price"] == offer["price_per_hour"]
    monthly = (Decimal(str(offer["price_per_hour"])) * 730).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert Decimal(str(running["pricing"]["monthly_price"])) == monthly
    assert running["location"] == offer["region"]
    assert [v["id"] for v in (await api.get(f"{V1}/vps", headers=tenant.headers)).json()["data"]] == [vps_id]
    # Deleting it through this face gives the offer back to the market.
    assert (await api.delete(f"{V1}/vps/{vps_id}", headers=tenant.headers)).status_code == 200

    async def status() -> int:
        return (await api.get(f"{V1}/vps/{vps_id}", headers=tenant.headers)).status_code

    await eventually(status, lambda code: code == 404)


def test_the_v1_document_describes_every_route_and_its_errors(vps_app) -> None:
    paths = v1_document(vps_app, "https://cloud.test")["paths"]
    operations = {
        ("get", "/api/v1/vps"): {"200", "401", "422", "429"},
        ("post", "/api/v1/vps"): {"201", "400", "401", "404", "422", "429"},
        ("get", "/api/v1/vps/{vps_id}"): {"200", "401", "404"},
        ("put", "/api/v1/vps/{vps_id}"): {"200", "400", "401", "404", "422"},
        ("delete", "/api/v1/vps/{vps_id}"): {"200", "401", "404", "409"},
        ("post", "/api/v1/vps/{vps_id}/start"): {"200", "401", "404", "409"},
        ("post", "/api/v1/vps/{vps_id}/stop"): {"200", "401", "404", "409"},
        ("post", "/api/v1/vps/{vps_id}/restart"): {"200", "401", "404", "409"},
        ("post", "/api/v1/vps/{vps_id}/rebuild"): {"200", "401", "404", "409", "422"},
        ("get", "/api/v1/plans"): {"200", "401"},
        ("get", "/api/v1/plans/{plan_id}"): {"200", "401", "404"},
    }
    for (method, path), statuses in operations.items():
        documented = set(paths[path][method]["responses"])
        assert statuses <= documented, (method, path, documented)
    create = paths["/api/v1/vps"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create == {"$ref": "#/components/schemas/VpsCreate"}


async def test_a_create_refused_by_its_location_leaves_nothing_behind(api, make_tenant, core) -> None:
    """One transaction: the SSH keys a refused create would have added are not in the account, and the error
    names the field as this document does."""
    tenant = make_tenant()
    with placed(core, {"sgp1": "lxc"}, lxc=ImportError("no LXC on this host")):
        body = {**DOCUMENT_BODY, "location": "sgp1", "ssh_keys": [ed25519_public_key("refused@laptop")]}
        r = await api.post(f"{V1}/vps", json=body, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert error_of(r)["code"] == "VALIDATION_ERROR" and error_of(r)["details"]["field"] == "location"
        assert "Location 'sgp1' takes no new servers now" in error_of(r)["message"]
    assert (await api.get("/api/ssh-keys", headers=tenant.headers)).json()["total"] == 0
    assert (await api.get(f"{V1}/vps", headers=tenant.headers)).json()["pagination"]["total"] == 0


async def test_accepted_actions_name_their_operation(api, make_tenant) -> None:
    tenant = make_tenant()
    made = await create_vps(api, tenant)
    assert made["operation_id"]
    op = await api.get(f"{V1}/operations/{made['operation_id']}", headers=tenant.headers)
    assert op.status_code == 200 and op.json()["data"]["kind"] == "create", op.text
    running = await wait_for(api, tenant, made["id"], "running")
    assert running["operation_id"] is None, "a read accepts nothing"
    stop = (await api.post(f"{V1}/vps/{made['id']}/stop", headers=tenant.headers)).json()["data"]
    assert stop["operation_id"] and stop["operation_id"] != made["operation_id"]
