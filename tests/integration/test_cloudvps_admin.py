"""CloudVPS admin routes: stats across tenants, system health checked for real, one user read and edited, and 403
for a user on any /admin path, existing or not."""

from __future__ import annotations

import pytest

from tests.conftest import Tenant

SERVER = {"label": "adm", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/admin/stats"),
        ("GET", "/api/v1/admin/system/health"),
        ("GET", "/api/v1/admin/users/1"),
        ("PUT", "/api/v1/admin/users/1"),
        ("GET", "/api/v1/admin/no-such-thing"),
        ("DELETE", "/api/v1/admin/users/1"),
        ("POST", "/api/v1/admin/anything/at/all"),
    ],
)
async def test_a_user_gets_403_on_every_admin_path(client, tenant: Tenant, method: str, path: str) -> None:
    r = await client.request(method, path, headers=tenant.headers, json={} if method in ("PUT", "POST") else None)
    assert r.status_code == 403, r.text
    assert r.json()["success"] is False and r.json()["error"]["code"] == "FORBIDDEN"


async def test_an_admin_gets_404_in_the_envelope_for_an_admin_path_that_does_not_exist(client, make_tenant) -> None:
    admin = make_tenant("admin")
    r = await client.get("/api/v1/admin/no-such-thing", headers=admin.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    assert r.json()["error"]["details"]["path"] == "/api/v1/admin/no-such-thing"
    # An admin path with a method it does not take: 405 for the admin, naming the methods it does.
    r = await client.delete("/api/v1/admin/users/1", headers=admin.headers)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    assert (await client.get("/api/v1/admin/stats")).status_code == 401  # anonymous: who are you, first


async def test_stats_count_every_tenant(client, make_tenant) -> None:
    admin, a, b = make_tenant("admin"), make_tenant(), make_tenant()
    before = (await client.get("/api/v1/admin/stats", headers=admin.headers)).json()["data"]
    for owner in (a, b, b):
        assert (await client.post("/api/servers", json=SERVER, headers=owner.headers)).status_code == 201
    after = (await client.get("/api/v1/admin/stats", headers=admin.headers)).json()["data"]
    assert after["servers"]["total"] == before["servers"]["total"] + 3
    assert after["servers"]["by_provider"]["simulator"] == before["servers"]["by_provider"].get("simulator", 0) + 3
    assert sum(after["servers"]["by_status"].values()) == after["servers"]["total"]
    assert after["users"]["total"] >= 3 and after["users"]["active"] >= 3
    assert set(after["operations"]) == {"in_flight", "pending", "running", "failed_last_day"}


async def test_system_health_checks_what_is_there_and_says_what_is_not(client, make_tenant) -> None:
    admin = make_tenant("admin")
    r = await client.get("/api/v1/admin/system/health", headers=admin.headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "healthy"
    assert data["services"]["database"] == "online" and data["services"]["simulator"] == "online"
    assert data["services"]["stripe"] == data["services"]["email"] == "not_configured"
    assert data["services"]["proxmox"] == "not_configured"  # no location runs on Proxmox VE here
    assert data["checks"]["database"]["latency_ms"] >= 0
    metrics = data["metrics"]
    assert metrics["total_users"] >= 1 and metrics["active_vps"] >= 0
    assert 0 <= metrics["memory_usage"] <= 100 and 0 <= metrics["disk_usage"] <= 100 and metrics["system_load"] >= 0


async def test_an_admin_reads_and_edits_a_user(client, make_tenant) -> None:
    admin, user = make_tenant("admin"), make_tenant()
    path = f"/api/v1/admin/users/user-{user.principal.user_id}"
    r = await client.get(path, headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["email"] == user.email and r.json()["data"]["role"] == "user"
    r = await client.put(path, json={"name": "Renamed", "tier": "pro", "role": "admin"}, headers=admin.headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["name"] == "Renamed" and data["tier"] == "pro" and data["role"] == "admin"
    # The new role holds at once, for the user's existing key too.
    assert (await client.get("/api/v1/admin/stats", headers=user.headers)).status_code == 200
    r = await client.put(path, json={"role": "root"}, headers=admin.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "role"
    r = await client.put(path, json={"name": "Not applied", "tier": "platinum"}, headers=admin.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "tier"
    assert (await client.get(path, headers=admin.headers)).json()["data"]["name"] == "Renamed"  # nothing half-done
    missing = await client.get("/api/v1/admin/users/user-999999999", headers=admin.headers)
    assert missing.status_code == 404


async def test_an_admin_cannot_take_away_their_own_admin_role(client, make_tenant) -> None:
    admin = make_tenant("admin")
    r = await client.put(
        f"/api/v1/admin/users/user-{admin.principal.user_id}", json={"role": "user"}, headers=admin.headers
    )
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "role"
    assert (await client.get("/api/v1/admin/stats", headers=admin.headers)).status_code == 200
