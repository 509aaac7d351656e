"""Servers through the LetsCloud face: lifecycle on the simulator, validation, the state machine."""

from __future__ import annotations

from sqlalchemy import select

from cloudplane.db.tables import Server
from cloudplane.providers.simulator import sim_machines
from tests.conftest import SERVER_BODY, eventually


async def test_create_returns_at_once_in_a_transitional_state_then_runs(client, tenant, core) -> None:
    r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "starting" and body["task_state"] == "creating"
    assert body["label"] == "My Web Server" and body["hostname"] == "webserver-01"
    assert body["plan"]["slug"] == "basic-1gb" and body["plan"]["ram"] == 1024 and body["plan"]["price"] == 5.0
    assert body["image"]["slug"] == "ubuntu-22-04" and body["location"]["slug"] == "nyc1"
    assert len(body["root_password"]) >= 16

    async def get():
        return (await client.get(f"/api/servers/{body['id']}", headers=tenant.headers)).json()

    running = await eventually(get, lambda s: s["status"] == "running")
    assert running["task_state"] is None
    assert running["ip_address"].startswith("198.18.") and running["private_ip"].startswith("10.")
    assert "root_password" not in running


async def test_a_given_password_is_never_echoed(client, tenant) -> None:
    r = await client.post(
        "/api/servers", json={**SERVER_BODY, "password": "SecurePassword123!"}, headers=tenant.headers
    )
    assert r.status_code == 201
    assert r.json()["root_password"] is None
    assert "SecurePassword123!" not in r.text


async def test_chosen_ssh_keys_are_installed_on_the_machine(client, tenant, sim_db, create_running_server) -> None:
    from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

    public = ed25519_public_key()
    key = (await client.post("/api/ssh-keys", json={"title": "laptop", "key": public}, headers=tenant.headers)).json()
    server = await create_running_server(tenant, ssh_keys=[key["id"]])
    assert [k["id"] for k in server["ssh_keys"]] == [key["id"]]
    with sim_db.read() as s:
        installed = (
            s.execute(select(sim_machines.c.ssh_keys).where(sim_machines.c.hostname == "webserver-01")).scalars().all()
        )
    assert any(public.split()[1] in keys for keys in installed)


async def test_list_paginates_and_reports_total(client, make_tenant, create_running_server) -> None:
    tenant = make_tenant()
    for i in range(3):
        r = await client.post("/api/servers", json={**SERVER_BODY, "label": f"s{i}"}, headers=tenant.headers)
        assert r.status_code == 201
    page1 = (await client.get("/api/servers?per_page=2", headers=tenant.headers)).json()
    page2 = (await client.get("/api/servers?per_page=2&page=2", headers=tenant.headers)).json()
    assert page1["total"] == page2["total"] == 3
    assert (page1["page"], page1["per_page"], page2["page"]) == (1, 2, 2)
    assert [s["label"] for s in page1["servers"] + page2["servers"]] == ["s0", "s1", "s2"]
    too_big = await client.get("/api/servers?per_page=101", headers=tenant.headers)
    assert too_big.status_code == 422 and too_big.json()["details"]["field"] == "per_page"


async def test_stop_start_reboot_follow_the_state_table(client, tenant, create_running_server) -> None:
    server = await create_running_server(tenant)
    url = f"/api/servers/{server['id']}"

    async def get():
        return (await client.get(url, headers=tenant.headers)).json()

    r = await client.post(f"{url}/start", headers=tenant.headers)
    assert r.status_code == 409 and r.json()["code"] == "INVALID_STATE"
    assert "must be stopped" in r.json()["error"]

    r = await client.post(f"{url}/stop", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["status"] == "stopping"
    await eventually(get, lambda s: s["status"] == "stopped" and s["task_state"] is None)

    assert (await client.post(f"{url}/reboot", headers=tenant.headers)).status_code == 409
    r = await client.post(f"{url}/start", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["status"] == "starting"
    await eventually(get, lambda s: s["status"] == "running")

    r = await client.post(f"{url}/reboot", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["status"] == "rebooting"
    await eventually(get, lambda s: s["status"] == "running" and s["task_state"] is None)


async def test_delete_answers_204_and_the_server_disappears_everywhere(
    client, tenant, core, sim_db, create_running_server
) -> None:
    server = await create_running_server(tenant)
    url = f"/api/servers/{server['id']}"
    r = await client.delete(url, headers=tenant.headers)
    assert r.status_code == 204 and r.content == b""
    assert (await client.delete(url, headers=tenant.headers)).status_code in (404, 409)

    async def get():
        return await client.get(url, headers=tenant.headers)

    gone = await eventually(get, lambda r: r.status_code == 404)
    assert gone.json() == {"error": "Server not found", "code": "NOT_FOUND", "details": {"server_id": server["id"]}}
    listed = (await client.get("/api/servers", headers=tenant.headers)).json()
    assert server["id"] not in [s["id"] for s in listed["servers"]]
    with core.db.read() as s:
        ref = s.scalar(select(Server.provider_ref).where(Server.id == server["id"]))
    with sim_db.read() as s:
        left = s.execute(select(sim_machines.c.id).where(sim_machines.c.id == int(ref.removeprefix("sim-")))).all()
    assert left == []


async def test_unknown_catalog_slugs_are_400_naming_the_field(client, tenant) -> None:
    for field in ("plan_slug", "image_slug", "location_slug"):
        r = await client.post("/api/servers", json={**SERVER_BODY, field: "nope"}, headers=tenant.headers)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "BAD_REQUEST" and r.json()["details"]["field"] == field


async def test_bad_bodies_are_422_in_the_face_envelope(client, tenant) -> None:
    cases = [
        ({k: v for k, v in SERVER_BODY.items() if k != "label"}, "label"),
        ({**SERVER_BODY, "status": "running"}, "status"),
        ({**SERVER_BODY, "owner_id": 1}, "owner_id"),
        ({**SERVER_BODY, "hostname": "-bad-"}, "hostname"),
        ({**SERVER_BODY, "password": "short"}, "password"),
        ({**SERVER_BODY, "ssh_keys": ["x"]}, "ssh_keys.0"),
    ]
    for body, field in cases:
        r = await client.post("/api/servers", json=body, headers=tenant.headers)
        assert r.status_code == 422, (body, r.text)
        payload = r.json()
        assert payload["code"] == "VALIDATION_ERROR" and payload["details"]["field"] == field, payload
    r = await client.post(
        "/api/servers", content=b"{not json", headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["code"] == "VALIDATION_ERROR"


async def test_missing_or_bad_api_key_is_401(client) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer cp_nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ):
        r = await client.get("/api/servers", headers=headers)
        assert r.status_code == 401
        assert r.json()["code"] == "UNAUTHORIZED" and set(r.json()) == {"error", "code", "details"}


async def test_unknown_path_is_404_in_the_face_envelope(client, tenant) -> None:
    r = await client.get("/api/nothing-here", headers=tenant.headers)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"


async def test_health(client) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy" and set(r.json()) == {"status", "service", "version"}


async def test_text_with_a_nul_character_is_never_a_server_error(client, tenant) -> None:
    # PostgreSQL text cannot hold NUL: the database refuses it, and the reply says so in the face's envelope.
    r = await client.post("/api/servers", json={**SERVER_BODY, "label": "web\x00one"}, headers=tenant.headers)
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        assert r.json()["code"] == "VALIDATION_ERROR" and "NUL" in r.json()["error"]
    assert (await client.get("/api/servers", headers=tenant.headers)).status_code == 200


async def test_accepted_actions_name_the_operation_that_carries_them(client, make_tenant) -> None:
    tenant = make_tenant()
    made = (await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)).json()
    op = await client.get(f"/api/operations/{made['operation_id']}", headers=tenant.headers)
    assert op.status_code == 200 and op.json()["kind"] == "create", op.text

    async def get():
        return (await client.get(f"/api/servers/{made['id']}", headers=tenant.headers)).json()

    running = await eventually(get, lambda s: s["status"] == "running")
    assert "operation_id" not in running, "a read accepts nothing"
    stop = (await client.post(f"/api/servers/{made['id']}/stop", headers=tenant.headers)).json()
    assert stop["status"] == "stopping" and stop["operation_id"] not in (None, made["operation_id"])
    op = await client.get(f"/api/operations/{stop['operation_id']}", headers=tenant.headers)
    assert op.json()["kind"] == "stop" and op.json()["target"]["id"] == made["id"], op.text
