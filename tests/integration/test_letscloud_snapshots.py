"""Snapshots through the LetsCloud face: create, list, restore (stopped only), delete."""

from __future__ import annotations

from sqlalchemy import select

from cloudplane.providers.simulator import sim_snapshots
from tests.conftest import eventually


async def test_snapshot_lifecycle(client, tenant, core, sim_db, create_running_server) -> None:
    server = await create_running_server(tenant)
    base = f"/api/servers/{server['id']}"
    r = await client.post(
        f"{base}/snapshots",
        json={"label": "Backup before update", "description": "pre-upgrade"},
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text
    snap = r.json()
    assert snap["status"] == "creating" and snap["server_id"] == server["id"] and snap["description"] == "pre-upgrade"
    assert snap["size"] == 0  # an integer, as the document types it: 0 GB until the snapshot is taken

    async def get_snap():
        return (await client.get(f"{base}/snapshots/{snap['id']}", headers=tenant.headers)).json()

    ready = await eventually(get_snap, lambda s: s["status"] == "available")
    assert ready["size"] >= 1
    listed = (await client.get(f"{base}/snapshots", headers=tenant.headers)).json()
    assert listed["total"] == 1 and listed["snapshots"][0]["id"] == snap["id"]
    server_view = (await client.get(base, headers=tenant.headers)).json()
    assert [s["id"] for s in server_view["snapshots"]] == [snap["id"]]

    # Restoring a running server is refused, as the document says.
    r = await client.post(f"{base}/snapshots/{snap['id']}/restore", headers=tenant.headers)
    assert r.status_code == 409

    await client.post(f"{base}/stop", headers=tenant.headers)

    async def get_server():
        return (await client.get(base, headers=tenant.headers)).json()

    await eventually(get_server, lambda s: s["status"] == "stopped" and s["task_state"] is None)
    r = await client.post(f"{base}/snapshots/{snap['id']}/restore", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["task_state"] == "restoring"
    await eventually(get_server, lambda s: s["status"] == "stopped" and s["task_state"] is None)

    assert (await client.delete(f"{base}/snapshots/{snap['id']}", headers=tenant.headers)).status_code == 204

    async def get_snap_status():
        return (await client.get(f"{base}/snapshots/{snap['id']}", headers=tenant.headers)).status_code

    await eventually(get_snap_status, lambda code: code == 404)
    with core.db.read() as s:
        token = _op_token(s, snap["id"])
    with sim_db.read() as s:
        assert s.execute(select(sim_snapshots).where(sim_snapshots.c.token == token)).all() == []
    assert (await client.get(f"{base}/snapshots", headers=tenant.headers)).json()["total"] == 0


async def test_snapshot_of_another_servers_snapshot_id_is_404(client, tenant, create_running_server) -> None:
    a = await create_running_server(tenant)
    b = await create_running_server(tenant)
    snap = (await client.post(f"/api/servers/{a['id']}/snapshots", json={"label": "x"}, headers=tenant.headers)).json()
    r = await client.get(f"/api/servers/{b['id']}/snapshots/{snap['id']}", headers=tenant.headers)
    assert r.status_code == 404


async def test_deleting_a_server_deletes_its_snapshots(client, tenant, core, sim_db, create_running_server) -> None:
    server = await create_running_server(tenant)
    base = f"/api/servers/{server['id']}"
    snap = (await client.post(f"{base}/snapshots", json={"label": "x"}, headers=tenant.headers)).json()

    async def get_snap():
        return (await client.get(f"{base}/snapshots/{snap['id']}", headers=tenant.headers)).json()

    await eventually(get_snap, lambda s: s["status"] == "available")
    assert (await client.delete(base, headers=tenant.headers)).status_code == 204

    async def get_server():
        return (await client.get(base, headers=tenant.headers)).status_code

    await eventually(get_server, lambda code: code == 404)
    with core.db.read() as s:
        from cloudplane.db.tables import Snapshot

        row = s.get(Snapshot, snap["id"])
        assert row.status == "deleted" and row.deleted_at is not None
        token = _op_token(s, snap["id"])
    with sim_db.read() as s:
        assert s.execute(select(sim_snapshots).where(sim_snapshots.c.token == token)).all() == []


def _op_token(session, snapshot_id: int) -> str:
    from cloudplane.db.tables import Operation

    return session.scalar(
        select(Operation.id).where(Operation.snapshot_id == snapshot_id, Operation.kind == "snapshot")
    )
