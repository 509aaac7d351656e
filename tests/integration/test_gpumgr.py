"""The GPU Cloud Manager face on the simulated marketplace: the document's examples, instances as servers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import update

from cloudplane.db.tables import Server
from cloudplane.domain.errors import ProviderError
from tests.conftest import eventually

V1 = "/api/v1"


async def test_providers(client, tenant) -> None:
    r = await client.get(f"{V1}/providers", headers=tenant.headers)
    assert r.json() == {"success": True, "message": "Providers retrieved successfully", "data": ["vast_ai"]}


async def test_the_documents_python_example(client, tenant) -> None:
    params = {"provider": "vast_ai", "gpu_model": "RTX 4090", "max_price": 2.0, "available": True}
    r = await client.get(f"{V1}/offers/search", params=params, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["success"] is True
    offers = r.json()["data"]
    assert offers and all(o["gpu_model"] == "RTX 4090" and o["price_per_hour"] <= 2.0 for o in offers)
    assert [o["price_per_hour"] for o in offers] == sorted(o["price_per_hour"] for o in offers)
    assert offers[0]["id"] == f"vast_{offers[0]['provider_id']}" and offers[0]["provider_data"]["simulated"] is True

    created = await client.post(
        f"{V1}/instances",
        json={
            "provider": "vast_ai",
            "offer_id": offers[0]["provider_id"],
            "image": "pytorch/pytorch:latest",
            "label": "My ML Training Instance",
        },
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    instance = created.json()["data"]
    assert created.json()["message"] == "Instance created successfully"
    assert instance["id"].startswith("vast_") and instance["status"] == "loading"
    assert instance["price_per_hour"] == offers[0]["price_per_hour"] and instance["gpu_model"] == "RTX 4090"

    async def get():
        return (await client.get(f"{V1}/instances/{instance['id']}", headers=tenant.headers)).json()["data"]

    running = await eventually(get, lambda i: i["status"] == "running")
    assert running["provider_id"] and running["provider_data"]["ssh_host"] and running["provider_data"]["ssh_port"]
    assert running["provider_data"]["image"] == "pytorch/pytorch:latest"
    listed = (await client.get(f"{V1}/instances", headers=tenant.headers)).json()["data"]
    assert [i["id"] for i in listed] == [instance["id"]]


async def test_the_curl_example_rents_offer_12345_and_the_instance_is_a_server(client, make_tenant) -> None:
    tenant = make_tenant()
    r = await client.post(
        f"{V1}/instances",
        json={
            "provider": "vast_ai",
            "offer_id": "12345",
            "image": "pytorch/pytorch:latest",
            "label": "Training Instance",
        },
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text
    instance = r.json()["data"]
    assert instance["price_per_hour"] == 1.5 and instance["region"] == "US-East"
    op = await client.get(f"{V1}/operations/{instance['operation_id']}", headers=tenant.headers)
    assert op.status_code == 200 and op.json()["data"]["kind"] == "rent", op.text

    async def get():
        return (await client.get(f"{V1}/instances/{instance['id']}", headers=tenant.headers)).json()["data"]

    await eventually(get, lambda i: i["status"] == "running")
    # The same object is a server on the LetsCloud face.
    servers = (await client.get("/api/servers", headers=tenant.headers)).json()["servers"]
    (server,) = [s for s in servers if s["label"] == "Training Instance"]
    assert server["status"] == "running" and server["plan"]["slug"] == "gpu-1x-rtx-4090"
    assert server["image"]["slug"] == "pytorch/pytorch:latest" and server["location"]["region"] == "US-East"
    # What a marketplace instance cannot do is refused with the reason, before anything changes.
    snap = await client.post(f"/api/servers/{server['id']}/snapshots", json={"label": "x"}, headers=tenant.headers)
    assert snap.status_code == 409 and "snapshot" in snap.json()["error"]

    # Offer 12345 is off the market while rented.
    other = make_tenant()
    again = await client.post(
        f"{V1}/instances",
        json={"provider": "vast_ai", "offer_id": "12345", "image": "x", "label": "y"},
        headers=other.headers,
    )
    assert again.status_code == 409 and again.json()["success"] is False

    stop = await client.post(f"{V1}/instances/{instance['id']}/stop", headers=tenant.headers)
    assert stop.json() == {
        "success": True,
        "message": "Instance stopped successfully",
        "operation_id": stop.json()["operation_id"],
    }
    assert stop.json()["operation_id"] not in (None, instance["operation_id"])
    await eventually(get, lambda i: i["status"] == "stopped")
    assert (await client.post(f"{V1}/instances/{instance['id']}/start", headers=tenant.headers)).status_code == 200
    await eventually(get, lambda i: i["status"] == "running")
    destroy = await client.delete(f"{V1}/instances/{instance['id']}", headers=tenant.headers)
    assert destroy.json()["success"] is True and destroy.json()["message"] == "Instance destroyed successfully"
    assert destroy.json()["operation_id"]

    async def status():
        return (await client.get(f"{V1}/instances/{instance['id']}", headers=tenant.headers)).status_code

    await eventually(status, lambda code: code == 404)
    # Back on the market.
    search = await client.get(f"{V1}/offers/search", params={"available": True, "limit": 500}, headers=tenant.headers)
    assert "12345" in [o["provider_id"] for o in search.json()["data"]]


async def test_errors_in_the_documents_envelope(client, tenant) -> None:
    r = await client.get(f"{V1}/offers/search", params={"provider": "nope"}, headers=tenant.headers)
    assert r.status_code == 404 and r.json()["success"] is False and isinstance(r.json()["error"], str)
    r = await client.post(
        f"{V1}/instances", json={"provider": "vast_ai", "offer_id": "0", "image": "x"}, headers=tenant.headers
    )
    assert r.status_code == 404 and "Offer not found" in r.json()["error"]
    r = await client.get(f"{V1}/instances/vast_999999999", headers=tenant.headers)
    assert r.status_code == 404
    assert r.json() == {"success": False, "error": "Instance not found", "details": {"instance_id": 999999999}}
    r = await client.post(f"{V1}/instances", json={"provider": "vast_ai"}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["success"] is False


async def test_a_failing_provider_does_not_break_search(client, tenant, core) -> None:
    class Broken:
        name = "broken"

        async def search_offers(self, query):
            raise ProviderError("marketplace is down", retryable=True)

    search = core.providers.market_search
    search.providers["broken"] = Broken()
    try:
        r = await client.get(f"{V1}/offers/search", params={"gpu_model": "H100"}, headers=tenant.headers)
    finally:
        del search.providers["broken"]
    assert r.status_code == 200
    assert r.json()["data"] and "marketplace is down" in r.json()["errors"]["broken"]


@pytest.mark.parametrize("param", [{"min_gpu_count": 0}, {"max_price": -1}, {"sort": "random"}, {"limit": 0}])
async def test_bad_search_parameters_are_422(client, tenant, param) -> None:
    r = await client.get(f"{V1}/offers/search", params=param, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["success"] is False


async def test_a_rent_that_fails_after_the_provider_made_the_instance_destroys_it(client, make_tenant, core) -> None:
    """Never two paid machines for one request: a failed rent removes what the marketplace made."""
    tenant = make_tenant()
    market = core.providers.market("vast_ai")
    market.boot_failure_rate = 1.0
    try:
        offers = (await client.get(f"{V1}/offers/search", params={"available": True}, headers=tenant.headers)).json()
        offer = offers["data"][3]
        r = await client.post(
            f"{V1}/instances",
            json={"provider": "vast_ai", "offer_id": offer["provider_id"], "image": "ubuntu:24.04", "label": "doomed"},
            headers=tenant.headers,
        )
        instance = r.json()["data"]

        async def get():
            return (await client.get(f"{V1}/instances/{instance['id']}", headers=tenant.headers)).json()["data"]

        failed = await eventually(get, lambda i: i["status"] == "error")
    finally:
        market.boot_failure_rate = 0.0
    assert failed["error"]
    assert [i for i in await market.list_instances() if i.label.startswith("doomed")] == []
    # The offer is back on the market.
    again = await client.get(f"{V1}/offers/search", params={"available": True, "limit": 500}, headers=tenant.headers)
    assert offer["provider_id"] in [o["provider_id"] for o in again.json()["data"]]


async def test_its_own_openapi_document(client) -> None:
    from openapi_spec_validator import validate

    doc = (await client.get(f"{V1}/gpu/openapi.json")).json()
    validate(doc)
    assert doc["info"]["title"].startswith("GPU Cloud Manager")
    assert set(doc["paths"]) == {
        "/api/v1/providers",
        "/api/v1/gpu-models",
        "/api/v1/offers/search",
        "/api/v1/instances",
        "/api/v1/instances/{instance_id}",
        "/api/v1/instances/{instance_id}/start",
        "/api/v1/instances/{instance_id}/stop",
    }


async def test_money_is_exact_on_every_face(client, make_tenant, core) -> None:
    """One price, computed once in Decimal: 0.0545 an hour is 39.785 a month, which is 39.79 to the cent (in
    floats, 39.78)."""
    tenant = make_tenant()
    offers = (await client.get(f"{V1}/offers/search", params={"available": True}, headers=tenant.headers)).json()
    for offer in offers["data"][5:]:
        r = await client.post(
            f"{V1}/instances",
            json={"provider": "vast_ai", "offer_id": offer["provider_id"], "image": "ubuntu:24.04", "label": "exact"},
            headers=tenant.headers,
        )
        if r.status_code != 409:  # rented by another test while the search was cached
            break
    assert r.status_code == 201, r.text
    server_id = int(r.json()["data"]["id"].rpartition("_")[2])

    async def status():
        return (await client.get(f"{V1}/instances/vast_{server_id}", headers=tenant.headers)).json()["data"]["status"]

    # Running first: the rent's workflow records the offer's own price as it ends.
    await eventually(status, lambda s: s == "running")
    with core.db.write() as s:
        s.execute(update(Server).where(Server.id == server_id).values(price_per_hour=Decimal("0.0545")))

    def exact(response):  # every JSON number as written on the wire
        return response.json(parse_float=Decimal)

    gpu = exact(await client.get(f"{V1}/instances/vast_{server_id}", headers=tenant.headers))["data"]
    assert gpu["price_per_hour"] == Decimal("0.0545")
    server = exact(await client.get(f"/api/servers/{server_id}", headers=tenant.headers))
    assert server["plan"]["price"] == Decimal("39.79")
    vps = exact(await client.get(f"{V1}/vps/vps-{server_id}", headers=tenant.headers))["data"]
    assert vps["pricing"] == {"monthly_price": Decimal("39.79"), "currency": "USD", "hourly_price": Decimal("0.0545")}
    # Then give the offer back to the market.
    assert (await client.delete(f"{V1}/instances/vast_{server_id}", headers=tenant.headers)).status_code == 200
