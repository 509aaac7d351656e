"""The events outbox: state changes write their events in their own transaction, with one vocabulary for every
face, and the admin audit log reads them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cloudplane.db.tables import Event
from tests.conftest import SERVER_BODY, Tenant, eventually
from tests.integration.test_operations import operation_id_of, wait_finished


def events_of(core: Any, tenant: Tenant, prefix: str = "") -> list[Event]:
    with core.db.read() as s:
        return list(
            s.scalars(
                select(Event)
                .where(Event.account_id == tenant.principal.account_id, Event.type.startswith(prefix))
                .order_by(Event.seq)
            )
        )


async def test_a_server_made_through_any_face_tells_the_same_story(client, make_tenant, core) -> None:
    for path, body in (
        ("/api/servers", SERVER_BODY),
        ("/api/v1/vps", {"name": "web", "plan_id": "plan-starter"}),
    ):
        tenant = make_tenant()
        r = await client.post(
            path, json=body, headers={**tenant.headers, "X-Request-ID": f"req-{tenant.principal.user_id}"}
        )
        assert r.status_code == 201, r.text
        op_id = operation_id_of(r)
        await wait_finished(client, tenant, op_id)
        types = [e.type for e in events_of(core, tenant, "vps.")]
        assert types == ["vps.create_requested", "vps.created"], (path, types)
        requested, created = events_of(core, tenant, "vps.")
        # Who asked, from where, in which request: on the request's event and on the outcome alike.
        for event in (requested, created):
            assert event.actor_user_id == tenant.principal.user_id
            assert event.request_id == f"req-{tenant.principal.user_id}"
            assert event.client_ip == "127.0.0.1"
            assert event.operation_id == op_id
            assert event.target_type == "server"
        assert created.target_id == requested.target_id


async def test_every_lifecycle_change_writes_its_event(client, tenant, core, create_running_server) -> None:
    server = await create_running_server(tenant)
    sid = server["id"]
    for action in ("stop", "start", "reboot"):
        r = await client.post(f"/api/servers/{sid}/{action}", headers=tenant.headers)
        await wait_finished(client, tenant, operation_id_of(r))
    await client.post(f"/api/servers/{sid}/stop", headers=tenant.headers)

    async def stopped() -> dict[str, Any]:
        return (await client.get(f"/api/servers/{sid}", headers=tenant.headers)).json()

    await eventually(stopped, lambda s: s["status"] == "stopped" and s["task_state"] is None)
    snap = await client.post(f"/api/servers/{sid}/snapshots", json={"label": "b"}, headers=tenant.headers)
    await wait_finished(client, tenant, operation_id_of(snap))
    restore = await client.post(f"/api/servers/{sid}/snapshots/{snap.json()['id']}/restore", headers=tenant.headers)
    await wait_finished(client, tenant, operation_id_of(restore))
    gone = await client.delete(f"/api/servers/{sid}", headers=tenant.headers)
    await wait_finished(client, tenant, operation_id_of(gone))
    types = [e.type for e in events_of(core, tenant, "vps.")]
    assert types == [
        "vps.create_requested",
        "vps.created",
        "vps.stop_requested",
        "vps.stopped",
        "vps.start_requested",
        "vps.started",
        "vps.reboot_requested",
        "vps.rebooted",
        "vps.stop_requested",
        "vps.stopped",
        "vps.backup.requested",
        "vps.backup.created",
        "vps.restore_requested",
        "vps.restored",
        "vps.delete_requested",
        "vps.deleted",
    ]
    backup = [e for e in events_of(core, tenant) if e.type == "vps.backup.created"][0]
    assert backup.target_type == "snapshot" and backup.target_id == str(snap.json()["id"])
    assert backup.data["server_id"] == sid


async def test_a_refused_action_writes_no_event(client, tenant, core, create_running_server) -> None:
    server = await create_running_server(tenant)
    before = len(events_of(core, tenant))
    r = await client.post(f"/api/servers/{server['id']}/start", headers=tenant.headers)
    assert r.status_code == 409
    assert len(events_of(core, tenant)) == before


async def test_a_failed_snapshot_is_a_backup_failed_event(client, tenant, core, create_running_server) -> None:
    from tests.integration.test_simulator_faults import faults

    server = await create_running_server(tenant)
    with faults(core, error_rate=1.0):
        r = await client.post(f"/api/servers/{server['id']}/snapshots", json={"label": "x"}, headers=tenant.headers)
        op = await wait_finished(client, tenant, operation_id_of(r))
    assert op["status"] == "failed"
    failed = [e for e in events_of(core, tenant) if e.type == "vps.backup.failed"]
    assert len(failed) == 1 and failed[0].data["error"]["code"] == "PROVIDER_ERROR"


async def test_the_audit_log_is_for_admins_and_filters(client, make_tenant, core) -> None:
    user, admin = make_tenant(), make_tenant(role="admin")
    r = await client.post("/api/servers", json=SERVER_BODY, headers={**user.headers, "X-Request-ID": "audit-me-1"})
    await wait_finished(client, user, operation_id_of(r))

    refused = await client.get("/api/v1/admin/audit-logs", headers=user.headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"

    listed = await client.get(
        "/api/v1/admin/audit-logs",
        params={"user_id": f"user-{user.principal.user_id}", "action": "vps."},
        headers=admin.headers,
    )
    assert listed.status_code == 200, listed.text
    entries = listed.json()["data"]
    assert [e["action"] for e in entries] == ["vps.created", "vps.create_requested"]  # newest first
    first = entries[1]
    assert first["actor"] == {"type": "user", "user_id": f"user-{user.principal.user_id}", "email": user.email}
    assert first["target"] == {"type": "server", "id": str(r.json()["id"])}
    assert first["ip_address"] == "127.0.0.1" and first["request_id"] == "audit-me-1"
    assert listed.json()["pagination"]["total"] == 2

    exact = await client.get(
        "/api/v1/admin/audit-logs",
        params={"action": "vps.created", "target_type": "server", "target_id": str(r.json()["id"])},
        headers=admin.headers,
    )
    assert [e["action"] for e in exact.json()["data"]] == ["vps.created"]
    future = await client.get(
        "/api/v1/admin/audit-logs", params={"start_date": "2999-01-01T00:00:00"}, headers=admin.headers
    )
    assert future.status_code == 200 and future.json()["data"] == []
    backwards = await client.get(
        "/api/v1/admin/audit-logs",
        params={"start_date": "2026-02-01T00:00:00Z", "end_date": "2026-01-01T00:00:00Z"},
        headers=admin.headers,
    )
    assert backwards.status_code == 422


async def test_suspending_a_user_is_an_event(client, make_tenant, core) -> None:
    user, admin = make_tenant(), make_tenant(role="admin")
    r = await client.post(f"/api/v1/admin/users/user-{user.principal.user_id}/suspend", headers=admin.headers)
    assert r.status_code == 200, r.text
    types = [e.type for e in events_of(core, user, "user.")]
    assert types == ["user.suspended"]
    assert events_of(core, user, "user.")[0].actor_user_id == admin.principal.user_id


async def test_drift_the_reconciler_repairs_is_an_event_of_the_system(
    client, tenant, core, create_running_server
) -> None:
    from cloudplane.workflows.reconciler import reconcile_once
    from tests.integration.test_reconciler import set_sim_state

    server = await create_running_server(tenant)
    set_sim_state(core, server["id"], "stopped")
    await reconcile_once(core)
    drifted = [e for e in events_of(core, tenant) if e.type == "vps.drifted"]
    assert len(drifted) == 1
    assert drifted[0].actor_user_id is None and drifted[0].request_id is None
    assert drifted[0].data == {"server_id": server["id"], "from": "running", "to": "stopped"}


async def test_apps_and_api_keys_are_events_without_their_secrets(client, tenant, core) -> None:
    app = await client.post(
        "/api/v1/apps", json={"name": "ev-app", "environment_variables": {"TOKEN": "s3cr3t"}}, headers=tenant.headers
    )
    assert app.status_code == 201, app.text
    app_id = app.json()["id"]
    await client.put(f"/api/v1/apps/{app_id}", json={"environment_variables": {"TOKEN": "n3w"}}, headers=tenant.headers)
    await client.delete(f"/api/v1/apps/{app_id}", headers=tenant.headers)
    key = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=tenant.headers)
    key_id = key.json()["data"]["id"]
    await client.delete(f"/api/v1/api-keys/{key_id}", headers=tenant.headers)
    seen = [(e.type, e.target_type, e.target_id, e.data) for e in events_of(core, tenant)]
    assert [t for t, *_ in seen] == [
        "api_key.created",  # the tenant's own first key
        "app.created",
        "app.updated",
        "app.deleted",
        "api_key.created",
        "api_key.revoked",
    ]
    assert seen[2][3] == {"fields": ["environment_variables"]}
    assert seen[1][1:3] == ("app", app_id)
    assert all("s3cr3t" not in repr(e) and "n3w" not in repr(e) and "cp_" not in repr(e) for e in seen)


async def test_registering_and_ssh_keys_are_events(client, core) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    r = await client.post(
        "/api/v1/auth/register", json={"name": "Ev", "email": "ev-events@example.com", "password": "password123"}
    )
    assert r.status_code == 201, r.text
    token = r.json()["data"]["token"]
    headers = {"Authorization": f"Bearer {token}"}
    public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    key = await client.post("/api/ssh-keys", json={"title": "laptop", "key": public}, headers=headers)
    assert key.status_code == 201
    assert (await client.delete(f"/api/ssh-keys/{key.json()['id']}", headers=headers)).status_code == 204
    with core.db.read() as s:
        user_id = s.scalar(
            select(Event.target_id).where(
                Event.type == "user.registered", Event.data["email"].as_string() == "ev-events@example.com"
            )
        )
        rows = s.scalars(select(Event).where(Event.actor_user_id == int(user_id)).order_by(Event.seq)).all()
    assert [e.type for e in rows] == ["user.registered", "ssh_key.created", "ssh_key.deleted"]
    assert rows[1].data["title"] == "laptop"
