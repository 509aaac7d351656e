"""Operations are resources on both faces; accepted actions name theirs; a failed hand-off to the workflow engine
never answers 500 and the dispatcher's sweep still finishes the operation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloudplane.db.tables import Operation, Server
from cloudplane.workflows import dispatcher, engine
from tests.conftest import SERVER_BODY, Tenant, eventually
from tests.integration.test_simulator_faults import faults

UUID_LENGTH = 36


def operation_id_of(response: httpx.Response) -> str:
    location = response.headers["operation-location"]
    op_id = location.rsplit("/", 1)[1]
    assert len(op_id) == UUID_LENGTH, location
    return op_id


async def wait_finished(client: httpx.AsyncClient, tenant: Tenant, op_id: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        return (await client.get(f"/api/v1/operations/{op_id}", headers=tenant.headers)).json()["data"]

    return await eventually(get, lambda op: op["status"] in ("succeeded", "failed"))


async def test_a_create_names_its_operation_which_both_faces_show(client, tenant) -> None:
    r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]
    op_id = operation_id_of(r)
    assert r.headers["operation-location"] == f"/api/operations/{op_id}"

    op = await wait_finished(client, tenant, op_id)
    assert op["kind"] == "create" and op["status"] == "succeeded" and op["progress"] == 100
    assert op["target"] == {"type": "vps", "id": f"vps-{server_id}"}
    assert op["error"] is None
    assert op["created_at"] <= op["started_at"] <= op["finished_at"]

    native = await client.get(f"/api/operations/{op_id}", headers=tenant.headers)
    assert native.status_code == 200
    assert native.json()["target"] == {"type": "server", "id": server_id}
    assert native.json()["status"] == "succeeded"


async def test_every_accepted_action_says_which_operation_carries_it(client, tenant, create_running_server) -> None:
    server = await create_running_server(tenant)
    stop = await client.post(f"/api/servers/{server['id']}/stop", headers=tenant.headers)
    assert stop.status_code == 200
    op = await wait_finished(client, tenant, operation_id_of(stop))
    assert op["kind"] == "stop" and op["status"] == "succeeded"

    snap = await client.post(f"/api/servers/{server['id']}/snapshots", json={"label": "s"}, headers=tenant.headers)
    assert snap.status_code == 201
    op = await wait_finished(client, tenant, operation_id_of(snap))
    assert op["kind"] == "snapshot" and op["target"] == {"type": "backup", "id": f"backup-{snap.json()['id']}"}

    vps = await client.post(f"/api/v1/vps/vps-{server['id']}/start", headers=tenant.headers)
    assert vps.status_code == 200
    assert vps.headers["operation-location"].startswith("/api/v1/operations/")
    await wait_finished(client, tenant, operation_id_of(vps))

    gone = await client.delete(f"/api/servers/{server['id']}", headers=tenant.headers)
    assert gone.status_code == 204
    op = await wait_finished(client, tenant, operation_id_of(gone))
    assert op["kind"] == "delete" and op["status"] == "succeeded"

    # Reads accept nothing, so they name no operation.
    listed = await client.get("/api/servers", headers=tenant.headers)
    assert "operation-location" not in listed.headers


async def test_operations_list_filters_by_status_and_target_newest_first(client, make_tenant) -> None:
    tenant = make_tenant()
    first = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    second = await client.post("/api/servers", json={**SERVER_BODY, "label": "two"}, headers=tenant.headers)
    ops = [operation_id_of(first), operation_id_of(second)]
    for op_id in ops:
        await wait_finished(client, tenant, op_id)

    r = await client.get("/api/v1/operations", headers=tenant.headers)
    body = r.json()
    assert r.status_code == 200 and body["success"] is True
    assert [o["id"] for o in body["data"]] == ops[::-1]
    assert body["pagination"] == {"page": 1, "limit": 20, "total": 2, "has_next": False, "has_prev": False}

    one = await client.get(
        "/api/v1/operations",
        params={"target_type": "vps", "target_id": f"vps-{first.json()['id']}", "status": "succeeded"},
        headers=tenant.headers,
    )
    assert [o["id"] for o in one.json()["data"]] == [ops[0]]
    none = await client.get("/api/v1/operations", params={"status": "failed"}, headers=tenant.headers)
    assert none.json()["data"] == [] and none.json()["pagination"]["total"] == 0
    paged = await client.get("/api/v1/operations", params={"limit": 1, "page": 2}, headers=tenant.headers)
    assert [o["id"] for o in paged.json()["data"]] == [ops[0]]
    assert paged.json()["pagination"]["has_prev"] is True


async def test_another_tenants_operation_is_not_found_on_both_faces(client, make_tenant) -> None:
    owner, intruder = make_tenant(), make_tenant()
    r = await client.post("/api/servers", json=SERVER_BODY, headers=owner.headers)
    op_id = operation_id_of(r)
    for path in (f"/api/v1/operations/{op_id}", f"/api/operations/{op_id}"):
        seen = await client.get(path, headers=intruder.headers)
        assert seen.status_code == 404, path
    listed = await client.get("/api/v1/operations", headers=intruder.headers)
    assert listed.json()["data"] == []
    lets = await client.get(f"/api/operations/{op_id}", headers=intruder.headers)
    assert lets.json()["code"] == "NOT_FOUND"
    v1 = await client.get(f"/api/v1/operations/{op_id}", headers=intruder.headers)
    assert v1.json()["success"] is False and v1.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("bad", ["not-a-uuid", "٣" * 36, "0" * 37])
async def test_a_malformed_operation_id_is_a_422_never_a_500(client, tenant, bad) -> None:
    r = await client.get(f"/api/v1/operations/{bad}", headers=tenant.headers)
    assert r.status_code == 422, r.text


async def test_a_failed_operation_says_why(client, tenant, core) -> None:
    with faults(core, error_rate=1.0):
        r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
        assert r.status_code == 201
        op = await wait_finished(client, tenant, operation_id_of(r))
    assert op["status"] == "failed"
    assert op["error"]["code"] == "PROVIDER_ERROR" and "gave up after" in op["error"]["message"]
    native = (await client.get(f"/api/operations/{op['id']}", headers=tenant.headers)).json()
    assert native["error"] == op["error"]


@pytest.fixture
def failing_hand_off(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The workflow engine refuses every start, as when its database is away for a moment."""
    refused: list[str] = []

    def refuse(op_id: str, kind: str, **_: object) -> None:
        refused.append(op_id)
        raise ConnectionError("workflow database unreachable")

    monkeypatch.setattr(engine, "start_operation", refuse)
    return refused


async def test_a_failed_hand_off_still_answers_201_and_the_sweep_finishes_it(
    client, tenant, core, failing_hand_off, monkeypatch
) -> None:
    r = await client.post("/api/servers", json=SERVER_BODY, headers={**tenant.headers, "Idempotency-Key": "hand-1"})
    assert r.status_code == 201, r.text
    op_id = operation_id_of(r)
    assert failing_hand_off[0] == op_id
    with core.db.read() as s:
        recorded = s.get(Operation, op_id)
        # Recorded as this process's to run (or pending, for any process): not lost, only not started.
        assert recorded.status in ("pending", "running") and recorded.progress <= 5

    # A client that retries the same request makes nothing new.
    again = await client.post("/api/servers", json=SERVER_BODY, headers={**tenant.headers, "Idempotency-Key": "hand-1"})
    assert again.status_code == 201 and again.json()["id"] == r.json()["id"]
    with core.db.read() as s:
        servers = s.scalar(
            select(func.count()).select_from(Server).where(Server.account_id == tenant.principal.account_id)
        )
    assert servers == 1

    # The engine is back: the sweep of this process starts what it holds or is pending, without a restart.
    monkeypatch.undo()
    op = await wait_finished(client, tenant, op_id)
    assert op["status"] == "succeeded"
    server = (await client.get(f"/api/servers/{r.json()['id']}", headers=tenant.headers)).json()
    assert server["status"] == "running"


async def test_the_sweep_starts_an_operation_twice_harmlessly(client, tenant, core) -> None:
    r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    op_id = operation_id_of(r)
    sweeper = dispatcher.current()
    assert sweeper is not None
    await asyncio.gather(*(asyncio.to_thread(dispatcher.hand_off, op_id, "create") for _ in range(5)))
    await asyncio.to_thread(sweeper.start_pending, 0)
    op = await wait_finished(client, tenant, op_id)
    assert op["status"] == "succeeded"
    with core.db.read() as s:
        refs = s.scalars(select(Server.provider_ref).where(Server.id == r.json()["id"])).all()
    assert len(refs) == 1 and refs[0] is not None
