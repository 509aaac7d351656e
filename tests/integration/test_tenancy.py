"""Tenancy across the route table: another account's ids are 404 on every route, and nothing changes."""

from __future__ import annotations

from fastapi import routing

from tests.conftest import SERVER_BODY, eventually

# (method, path template) -> how an intruder calls it with the owner's ids; every /api route taking an id or a
# body that names ids must be here, so a new route without a tenancy check fails this test.
INTRUSIONS = {
    ("GET", "/api/servers/{server_id}"): lambda ids: ("GET", f"/api/servers/{ids['server']}", None),
    ("DELETE", "/api/servers/{server_id}"): lambda ids: ("DELETE", f"/api/servers/{ids['server']}", None),
    ("POST", "/api/servers/{server_id}/start"): lambda ids: ("POST", f"/api/servers/{ids['stopped']}/start", None),
    ("POST", "/api/servers/{server_id}/stop"): lambda ids: ("POST", f"/api/servers/{ids['server']}/stop", None),
    ("POST", "/api/servers/{server_id}/reboot"): lambda ids: ("POST", f"/api/servers/{ids['server']}/reboot", None),
    ("GET", "/api/ssh-keys/{key_id}"): lambda ids: ("GET", f"/api/ssh-keys/{ids['key']}", None),
    ("DELETE", "/api/ssh-keys/{key_id}"): lambda ids: ("DELETE", f"/api/ssh-keys/{ids['key']}", None),
    ("GET", "/api/servers/{server_id}/snapshots"): lambda ids: ("GET", f"/api/servers/{ids['server']}/snapshots", None),
    ("POST", "/api/servers/{server_id}/snapshots"): lambda ids: (
        "POST",
        f"/api/servers/{ids['server']}/snapshots",
        {"label": "mine now"},
    ),
    ("GET", "/api/servers/{server_id}/snapshots/{snapshot_id}"): lambda ids: (
        "GET",
        f"/api/servers/{ids['stopped']}/snapshots/{ids['snapshot']}",
        None,
    ),
    ("DELETE", "/api/servers/{server_id}/snapshots/{snapshot_id}"): lambda ids: (
        "DELETE",
        f"/api/servers/{ids['stopped']}/snapshots/{ids['snapshot']}",
        None,
    ),
    ("POST", "/api/servers/{server_id}/snapshots/{snapshot_id}/restore"): lambda ids: (
        "POST",
        f"/api/servers/{ids['stopped']}/snapshots/{ids['snapshot']}/restore",
        None,
    ),
    ("POST", "/api/servers"): lambda ids: ("POST", "/api/servers", {**SERVER_BODY, "ssh_keys": [ids["key"]]}),
    ("DELETE", "/api/v1/api-keys/{key_id}"): lambda ids: ("DELETE", f"/api/v1/api-keys/{ids['api_key']}", None),
    ("GET", "/api/v1/instances/{instance_id}"): lambda ids: ("GET", f"/api/v1/instances/{ids['gpu']}", None),
    ("DELETE", "/api/v1/instances/{instance_id}"): lambda ids: ("DELETE", f"/api/v1/instances/{ids['gpu']}", None),
    ("POST", "/api/v1/instances/{instance_id}/start"): lambda ids: (
        "POST",
        f"/api/v1/instances/{ids['gpu']}/start",
        None,
    ),
    ("POST", "/api/v1/instances/{instance_id}/stop"): lambda ids: (
        "POST",
        f"/api/v1/instances/{ids['gpu']}/stop",
        None,
    ),
    ("GET", "/api/v1/vps/{vps_id}"): lambda ids: ("GET", f"/api/v1/vps/vps-{ids['server']}", None),
    ("PUT", "/api/v1/vps/{vps_id}"): lambda ids: ("PUT", f"/api/v1/vps/vps-{ids['server']}", {"name": "mine now"}),
    ("DELETE", "/api/v1/vps/{vps_id}"): lambda ids: ("DELETE", f"/api/v1/vps/vps-{ids['server']}", None),
    ("POST", "/api/v1/vps/{vps_id}/start"): lambda ids: ("POST", f"/api/v1/vps/vps-{ids['stopped']}/start", None),
    ("POST", "/api/v1/vps/{vps_id}/stop"): lambda ids: ("POST", f"/api/v1/vps/vps-{ids['server']}/stop", None),
    ("POST", "/api/v1/vps/{vps_id}/restart"): lambda ids: ("POST", f"/api/v1/vps/vps-{ids['server']}/restart", None),
    ("GET", "/api/v1/apps/{app_id}"): lambda ids: ("GET", f"/api/v1/apps/{ids['app']}", None),
    ("PUT", "/api/v1/apps/{app_id}"): lambda ids: (
        "PUT",
        f"/api/v1/apps/{ids['app']}",
        {"description": "mine now", "environment_variables": {"SECRET": None}},
    ),
    ("DELETE", "/api/v1/apps/{app_id}"): lambda ids: ("DELETE", f"/api/v1/apps/{ids['app']}", None),
}
# Routes that take no id and list only the caller's own objects (checked below for emptiness).
ID_FREE = {
    ("GET", "/api/servers"),
    ("GET", "/api/ssh-keys"),
    ("POST", "/api/ssh-keys"),
    ("GET", "/api/plans"),
    ("GET", "/api/images"),
    ("GET", "/api/locations"),
    ("GET", "/api/account"),
}


# Routes about the caller only (no ids): the caller's own profile, keys, sessions.
ID_FREE |= {
    ("GET", "/api/v1/providers"),
    ("GET", "/api/v1/gpu-models"),
    ("GET", "/api/v1/offers/search"),
    ("GET", "/api/v1/instances"),
    ("POST", "/api/v1/instances"),
    ("GET", "/api/v1/api-keys"),
    ("POST", "/api/v1/api-keys"),
    ("GET", "/api/v1/users/profile"),
    ("PUT", "/api/v1/users/profile"),
    ("POST", "/api/v1/users/change-password"),
    ("GET", "/api/v1/users/me"),
    ("PUT", "/api/v1/users/me"),
    ("GET", "/api/v1/vps"),
    ("POST", "/api/v1/vps"),
    ("GET", "/api/v1/apps"),
    ("POST", "/api/v1/apps"),
    # The catalog is the same for every account: a plan id names nothing of anyone's.
    ("GET", "/api/v1/plans"),
    ("GET", "/api/v1/plans/{plan_id}"),
}
# Sign-in routes: anonymous by nature.
ANONYMOUS = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
}
# Admin-only: a user gets 403, whatever the id.
ADMIN = {
    ("GET", "/api/v1/admin/users"): ("GET", "/api/v1/admin/users", None),
    ("PUT", "/api/v1/admin/users/{user_id}/tier"): ("PUT", "/api/v1/admin/users/user-1/tier", {"tier": "enterprise"}),
    ("POST", "/api/v1/admin/users/{user_id}/suspend"): ("POST", "/api/v1/admin/users/user-1/suspend", None),
    ("POST", "/api/v1/admin/users/{user_id}/activate"): ("POST", "/api/v1/admin/users/user-1/activate", None),
}
# Documents about the API, public by design.
PUBLIC = {
    ("GET", "/api/openapi.json"),
    ("GET", "/api/openapi.yaml"),
    ("GET", "/api/docs"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/docs"),
    ("GET", "/api/v1/gpu/openapi.json"),
}


def api_routes(app) -> set[tuple[str, str]]:
    return {
        (method, ctx.path)
        for ctx in routing.iter_route_contexts(app.routes)
        if ctx.path.startswith("/api/")
        for method in ctx.methods or ()
    }


def test_every_route_is_covered(app) -> None:
    assert api_routes(app) == set(INTRUSIONS) | ID_FREE | PUBLIC | ANONYMOUS | set(ADMIN)


async def test_admin_routes_answer_403_to_a_user(client, make_tenant) -> None:
    user = make_tenant()
    for verb, url, body in ADMIN.values():
        r = await client.request(verb, url, json=body, headers=user.headers)
        assert r.status_code == 403, (verb, url, r.text)


async def test_every_non_public_route_requires_credentials(client, app) -> None:
    for method, path in api_routes(app) - PUBLIC - ANONYMOUS:
        url = path.format(
            server_id=1,
            snapshot_id=1,
            key_id=1,
            user_id="user-1",
            instance_id="vast_1",
            vps_id="vps-1",
            plan_id="plan-starter",
            app_id="00000000-0000-4000-8000-000000000000",
        )
        r = await client.request(method, url, json={})
        assert r.status_code == 401, (method, path, r.status_code)


async def test_another_accounts_ids_are_404_and_nothing_changes(client, make_tenant, create_running_server) -> None:
    from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

    owner, intruder = make_tenant(), make_tenant()
    key = (
        await client.post("/api/ssh-keys", json={"title": "k", "key": ed25519_public_key()}, headers=owner.headers)
    ).json()
    server = await create_running_server(owner)
    stopped = await create_running_server(owner, label="stopped one")
    await client.post(f"/api/servers/{stopped['id']}/stop", headers=owner.headers)

    async def get(url):
        return (await client.get(url, headers=owner.headers)).json()

    await eventually(
        lambda: get(f"/api/servers/{stopped['id']}"), lambda s: s["status"] == "stopped" and not s["task_state"]
    )
    snap = (
        await client.post(f"/api/servers/{stopped['id']}/snapshots", json={"label": "s"}, headers=owner.headers)
    ).json()
    snap_url = f"/api/servers/{stopped['id']}/snapshots/{snap['id']}"
    await eventually(lambda: get(snap_url), lambda s: s["status"] == "available")
    await eventually(lambda: get(f"/api/servers/{stopped['id']}"), lambda s: s["task_state"] is None)

    api_key = (await client.post("/api/v1/api-keys", json={"name": "mine"}, headers=owner.headers)).json()["data"]
    offers = (await client.get("/api/v1/offers/search", params={"available": True}, headers=owner.headers)).json()
    rented = await client.post(
        "/api/v1/instances",
        json={"provider": "vast_ai", "offer_id": offers["data"][-1]["provider_id"], "image": "ubuntu", "label": "gpu"},
        headers=owner.headers,
    )
    gpu = rented.json()["data"]["id"]
    app = await client.post(
        "/api/v1/apps", json={"name": "private", "environment_variables": {"SECRET": "s"}}, headers=owner.headers
    )
    assert app.status_code == 201, app.text
    await eventually(lambda: get(f"/api/v1/instances/{gpu}"), lambda i: i["data"]["status"] == "running")
    ids = {
        "server": server["id"],
        "stopped": stopped["id"],
        "key": key["id"],
        "snapshot": snap["id"],
        "api_key": api_key["id"],
        "gpu": gpu,
        "app": app.json()["id"],
    }
    before = [
        await get(f"/api/servers/{server['id']}"),
        await get(f"/api/servers/{stopped['id']}"),
        await get(f"/api/ssh-keys/{key['id']}"),
        await get(snap_url),
        await get(f"/api/v1/instances/{gpu}"),
        await get(f"/api/v1/apps/{ids['app']}"),
    ]

    for (method, template), make in INTRUSIONS.items():
        verb, url, body = make(ids)
        r = await client.request(verb, url, json=body, headers=intruder.headers)
        assert r.status_code == 404, (method, template, r.status_code, r.text)
    owner_keys = (await client.get("/api/v1/api-keys", headers=owner.headers)).json()["data"]
    assert api_key["id"] in [k["id"] for k in owner_keys]

    after = [
        await get(f"/api/servers/{server['id']}"),
        await get(f"/api/servers/{stopped['id']}"),
        await get(f"/api/ssh-keys/{key['id']}"),
        await get(snap_url),
        await get(f"/api/v1/instances/{gpu}"),
        await get(f"/api/v1/apps/{ids['app']}"),
    ]
    assert after == before
    for url, field in (
        ("/api/servers", "servers"),
        ("/api/ssh-keys", "ssh_keys"),
        ("/api/v1/vps", "data"),
        ("/api/v1/apps", "items"),
    ):
        assert (await client.get(url, headers=intruder.headers)).json()[field] == []
    account = (await client.get("/api/account", headers=intruder.headers)).json()
    assert account["email"] == intruder.email
