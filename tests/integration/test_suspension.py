"""Suspension: an admin suspends a VPS (or a user, and with them their servers); every face shows it `suspended`, its
machine is frozen, its owner is refused everything with a clear 409, and unsuspending brings back the power state it
had. And the admins' list of every tenant's VPS."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from cloudplane.db.tables import Event, Operation
from cloudplane.providers.simulator import sim_machines
from cloudplane.workflows.reconciler import reconcile_once
from tests.conftest import Tenant, eventually
from tests.integration.test_reconciler import server_row, sim_id

V1 = "/api/v1"
SUSPENDED_MESSAGE = "suspended by an administrator; contact support"


def machine_state(core: Any, server_id: int) -> str:
    with core.providers.get("simulator").db.read() as s:
        return s.execute(select(sim_machines.c.state).where(sim_machines.c.id == sim_id(core, server_id))).scalar_one()


def operations_of(core: Any, server_id: int) -> list[tuple[str, str]]:
    with core.db.read() as s:
        rows = s.execute(
            select(Operation.kind, Operation.status)
            .where(Operation.server_id == server_id)
            .order_by(Operation.created_at)
        )
        return [(kind, status) for kind, status in rows]


def server_events(core: Any, server_id: int) -> list[str]:
    with core.db.read() as s:
        return list(
            s.scalars(
                select(Event.type)
                .where(
                    Event.target_type == "server", Event.target_id == str(server_id), Event.type.like("vps.%suspend%")
                )
                .order_by(Event.seq)
            )
        )


async def settled(core: Any, server_id: int) -> None:
    """Wait until no operation of the server is unfinished."""

    async def unfinished() -> list[tuple[str, str]]:
        return [op for op in operations_of(core, server_id) if op[1] in ("pending", "running")]

    await eventually(unfinished, lambda ops: ops == [])


async def vps(client: httpx.AsyncClient, tenant: Tenant, server_id: int) -> dict[str, Any]:
    r = await client.get(f"{V1}/vps/vps-{server_id}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def letscloud(client: httpx.AsyncClient, tenant: Tenant, server_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/servers/{server_id}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_suspended_vps_is_frozen_shows_suspended_and_refuses_its_owner(
    client, make_tenant, core, create_running_server
) -> None:
    admin, owner = make_tenant("admin"), make_tenant()
    server = await create_running_server(owner)
    sid = server["id"]
    r = await client.post(f"{V1}/admin/vps/vps-{sid}/suspend", headers=admin.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["data"]["status"] == "suspended" and body["data"]["operation_id"]
    await settled(core, sid)
    assert operations_of(core, sid)[-1] == ("suspend", "succeeded")
    assert machine_state(core, sid) == "suspended"  # frozen at the provider, not only flagged
    assert (await vps(client, owner, sid))["status"] == "suspended"
    assert (await letscloud(client, owner, sid))["status"] == "suspended"
    listed = await client.get(f"{V1}/vps", params={"status": "suspended"}, headers=owner.headers)
    assert [v["id"] for v in listed.json()["data"]] == [f"vps-{sid}"]

    # Every owner action, on each face, is a 409 in its envelope saying why and what to do.
    cloudvps_actions = [("POST", "start"), ("POST", "stop"), ("POST", "restart"), ("DELETE", "")]
    for method, action in cloudvps_actions:
        path = f"{V1}/vps/vps-{sid}" + (f"/{action}" if action else "")
        r = await client.request(method, path, headers=owner.headers)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["success"] is False and r.json()["error"]["code"] == "CONFLICT"
        assert SUSPENDED_MESSAGE in r.json()["error"]["message"]
    letscloud_actions = [
        ("POST", "start", None),
        ("POST", "stop", None),
        ("POST", "reboot", None),
        ("DELETE", "", None),
        ("POST", "snapshots", {"label": "sneaky"}),
    ]
    for method, action, body in letscloud_actions:
        path = f"/api/servers/{sid}" + (f"/{action}" if action else "")
        r = await client.request(method, path, headers=owner.headers, json=body)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["code"] == "SUSPENDED" and SUSPENDED_MESSAGE in r.json()["error"]
    assert operations_of(core, sid)[-1] == ("suspend", "succeeded")  # nothing was accepted
    assert machine_state(core, sid) == "suspended"

    r = await client.post(f"{V1}/admin/vps/vps-{sid}/unsuspend", headers=admin.headers)
    assert r.status_code == 200, r.text
    await settled(core, sid)
    assert operations_of(core, sid)[-1] == ("resume", "succeeded")
    assert machine_state(core, sid) == "running"
    assert (await vps(client, owner, sid))["status"] == "running"
    assert server_events(core, sid) == [
        "vps.suspend_requested",
        "vps.suspended",
        "vps.unsuspend_requested",
        "vps.unsuspended",
    ]
    # The owner has their server back.
    assert (await client.post(f"{V1}/vps/vps-{sid}/stop", headers=owner.headers)).status_code == 200


async def test_a_stopped_vps_stays_stopped_and_is_never_frozen(
    client, make_tenant, core, create_running_server
) -> None:
    admin, owner = make_tenant("admin"), make_tenant()
    sid = (await create_running_server(owner))["id"]
    assert (await client.post(f"/api/servers/{sid}/stop", headers=owner.headers)).status_code == 200
    await eventually(lambda: letscloud(client, owner, sid), lambda s: s["status"] == "stopped" and not s["task_state"])
    assert (await client.post(f"{V1}/admin/vps/vps-{sid}/suspend", headers=admin.headers)).status_code == 200
    await settled(core, sid)
    assert machine_state(core, sid) == "stopped"
    assert (await vps(client, owner, sid))["status"] == "suspended"
    r = await client.post(f"{V1}/vps/vps-{sid}/start", headers=owner.headers)
    assert r.status_code == 409 and SUSPENDED_MESSAGE in r.json()["error"]["message"]
    assert (await client.post(f"{V1}/admin/vps/vps-{sid}/unsuspend", headers=admin.headers)).status_code == 200
    await settled(core, sid)
    assert machine_state(core, sid) == "stopped"
    assert (await vps(client, owner, sid))["status"] == "stopped"


async def test_suspend_and_unsuspend_refuse_what_makes_no_sense(
    client, make_tenant, core, create_running_server
) -> None:
    admin, owner = make_tenant("admin"), make_tenant()
    sid = (await create_running_server(owner))["id"]
    r = await client.post(f"{V1}/admin/vps/vps-{sid}/unsuspend", headers=admin.headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT"
    assert (await client.post(f"{V1}/admin/vps/vps-{sid}/suspend", headers=admin.headers)).status_code == 200
    r = await client.post(f"{V1}/admin/vps/vps-{sid}/suspend", headers=admin.headers)
    assert r.status_code == 409 and "already" in r.json()["error"]["message"]
    for path in ("suspend", "unsuspend"):
        assert (await client.post(f"{V1}/admin/vps/vps-999999999/{path}", headers=admin.headers)).status_code == 404
        r = await client.post(f"{V1}/admin/vps/vps-{sid}/{path}", headers=owner.headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    await settled(core, sid)
    assert (await client.post(f"{V1}/admin/vps/vps-{sid}/unsuspend", headers=admin.headers)).status_code == 200
    await settled(core, sid)


async def test_the_reconciler_leaves_a_frozen_machine_alone(client, make_tenant, core, create_running_server) -> None:
    admin, owner = make_tenant("admin"), make_tenant()
    sid = (await create_running_server(owner))["id"]
    assert (await client.post(f"{V1}/admin/vps/vps-{sid}/suspend", headers=admin.headers)).status_code == 200
    await settled(core, sid)
    report = await reconcile_once(core)
    assert sid not in {r.server_id for r in report.repairs}
    row = server_row(core, sid)
    assert row.status == "running" and row.suspended_at is not None and machine_state(core, sid) == "suspended"
    assert (await client.post(f"{V1}/admin/vps/vps-{sid}/unsuspend", headers=admin.headers)).status_code == 200
    await settled(core, sid)
    assert machine_state(core, sid) == "running"


async def test_suspending_a_user_suspends_their_servers_and_unsuspending_restores_them(
    client, make_tenant, core, create_running_server
) -> None:
    admin, owner, other = make_tenant("admin"), make_tenant(), make_tenant()
    running = (await create_running_server(owner))["id"]
    stopped = (await create_running_server(owner))["id"]
    bystander = (await create_running_server(other))["id"]
    assert (await client.post(f"/api/servers/{stopped}/stop", headers=owner.headers)).status_code == 200
    await eventually(lambda: letscloud(client, owner, stopped), lambda s: s["status"] == "stopped")
    await settled(core, stopped)

    r = await client.post(f"{V1}/admin/users/user-{owner.principal.user_id}/suspend", headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "suspended"
    for sid in (running, stopped):
        await settled(core, sid)
        assert operations_of(core, sid)[-1] == ("suspend", "succeeded")
        assert server_row(core, sid).suspended_at is not None
    assert (machine_state(core, running), machine_state(core, stopped)) == ("suspended", "stopped")
    assert server_row(core, bystander).suspended_at is None and machine_state(core, bystander) == "running"
    with core.db.read() as s:
        types = list(
            s.scalars(
                select(Event.type).where(Event.account_id == owner.principal.account_id, Event.type == "user.suspended")
            )
        )
    assert types == ["user.suspended"]
    admin_view = await client.get(
        f"{V1}/admin/vps", params={"user_id": f"user-{owner.principal.user_id}"}, headers=admin.headers
    )
    assert {v["status"] for v in admin_view.json()["data"]} == {"suspended"}

    r = await client.post(f"{V1}/admin/users/user-{owner.principal.user_id}/unsuspend", headers=admin.headers)
    assert r.status_code == 200 and r.json()["data"]["status"] == "active"
    for sid in (running, stopped):
        await settled(core, sid)
        assert operations_of(core, sid)[-1] == ("resume", "succeeded")
        assert server_row(core, sid).suspended_at is None
    assert (machine_state(core, running), machine_state(core, stopped)) == ("running", "stopped")
    assert (await vps(client, owner, running))["status"] == "running"
    assert (await vps(client, owner, stopped))["status"] == "stopped"


async def test_a_server_busy_when_its_user_is_suspended_is_frozen_once_its_action_ends(
    client, make_tenant, core, create_running_server
) -> None:
    admin, owner = make_tenant("admin"), make_tenant()
    r = await client.post(
        "/api/servers",
        json={"label": "new", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"},
        headers=owner.headers,
    )
    sid = r.json()["id"]
    # Suspended while (perhaps still) being created: the freeze waits for the create to end.
    assert (
        await client.post(f"{V1}/admin/users/user-{owner.principal.user_id}/suspend", headers=admin.headers)
    ).status_code == 200
    await settled(core, sid)
    assert [kind for kind, _ in operations_of(core, sid)] == ["create", "suspend"]
    assert all(status == "succeeded" for _, status in operations_of(core, sid))
    row = server_row(core, sid)
    assert row.status == "running" and row.task_state is None and machine_state(core, sid) == "suspended"


async def test_admins_list_every_tenants_vps_with_filters_and_owners(
    client, make_tenant, core, create_running_server
) -> None:
    admin, a, b = make_tenant("admin"), make_tenant(), make_tenant()
    a1 = (await create_running_server(a, label="alpha-web"))["id"]
    a2 = (await create_running_server(a, label="alpha-db"))["id"]
    b1 = (await create_running_server(b, label="beta-web"))["id"]
    assert (await client.post(f"{V1}/admin/vps/vps-{a2}/suspend", headers=admin.headers)).status_code == 200

    async def listed(**params: Any) -> dict[str, Any]:
        r = await client.get(f"{V1}/admin/vps", params=params, headers=admin.headers)
        assert r.status_code == 200, r.text
        return r.json()

    mine = await listed(user_id=f"user-{a.principal.user_id}")
    assert [v["id"] for v in mine["data"]] == [f"vps-{a2}", f"vps-{a1}"]  # newest first
    assert {(v["user_id"], v["user_email"]) for v in mine["data"]} == {(f"user-{a.principal.user_id}", a.email)}
    assert mine["pagination"] == {"page": 1, "limit": 20, "total": 2, "has_next": False, "has_prev": False}
    assert {"specifications", "pricing", "ip_address", "operating_system"} <= set(mine["data"][0])
    everyone = await listed(limit=100)
    assert {f"vps-{i}" for i in (a1, a2, b1)} <= {v["id"] for v in everyone["data"]}
    suspended = await listed(status="suspended", limit=100)
    assert f"vps-{a2}" in {v["id"] for v in suspended["data"]}
    assert {v["status"] for v in suspended["data"]} == {"suspended"}
    assert f"vps-{a1}" not in {v["id"] for v in suspended["data"]}
    web = await listed(search="WEB", user_id=f"user-{b.principal.user_id}")
    assert [v["id"] for v in web["data"]] == [f"vps-{b1}"]
    assert [v["id"] for v in (await listed(search="alpha", location="nyc1", limit=100))["data"]][:2] == [
        f"vps-{a2}",
        f"vps-{a1}",
    ]
    assert (await listed(location="nowhere"))["data"] == []
    assert (await listed(user_id="user-999999999"))["data"] == []
    page = await listed(user_id=f"user-{a.principal.user_id}", limit=1, page=2)
    assert [v["id"] for v in page["data"]] == [f"vps-{a1}"]
    assert page["pagination"]["has_prev"] is True and page["pagination"]["has_next"] is False
    assert (await client.get(f"{V1}/admin/vps", params={"limit": 101}, headers=admin.headers)).status_code == 422
    r = await client.get(f"{V1}/admin/vps", headers=a.headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    await settled(core, a2)
    assert (await client.post(f"{V1}/admin/vps/vps-{a2}/unsuspend", headers=admin.headers)).status_code == 200
    await settled(core, a2)
