"""CloudVPS's rebuild (POST /api/v1/vps/{id}/rebuild): the disk re-imaged from the operating system asked for (or
the one it runs), new SSH keys and a new root password shown once; a running VPS is stopped, rebuilt and started
again, a stopped one stays stopped; its backups stay."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cloudplane.db.tables import Event, Operation, Server
from cloudplane.providers.base import RebuildRequest
from cloudplane.providers.simulator import SimulatorProvider, sim_machines
from tests.conftest import Tenant
from tests.integration.test_cloudvps_backups import settled_backups
from tests.integration.test_cloudvps_vps import (
    V1,
    api,
    cloudvps_plans,
    create_running_vps,
    error_of,
    vps_app,
    wait_for,
)
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key
from tests.integration.test_reconciler import sim_id
from tests.integration.test_suspension import operations_of, settled

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

__all__ = ["api", "cloudvps_plans", "vps_app"]  # fixtures, used by name


def machine(core: Any, server_id: int) -> Any:
    with core.providers.get("simulator").db.read() as s:
        return s.execute(select(sim_machines).where(sim_machines.c.id == sim_id(core, server_id))).one()


def number(vps: dict[str, Any]) -> int:
    return int(vps["id"].removeprefix("vps-"))


def events_of(core: Any, server_id: int) -> list[str]:
    with core.db.read() as s:
        return list(
            s.scalars(
                select(Event.type)
                .where(Event.target_type == "server", Event.target_id == str(server_id), Event.type.like("vps.rebuil%"))
                .order_by(Event.seq)
            )
        )


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[RebuildRequest]:
    """What the simulator is asked to put on each disk it rebuilds (the password hash among it)."""
    seen: list[RebuildRequest] = []
    original = SimulatorProvider.rebuild

    async def recording(self: SimulatorProvider, ref: str, request: RebuildRequest) -> None:
        seen.append(request)
        await original(self, ref, request)

    monkeypatch.setattr(SimulatorProvider, "rebuild", recording)
    return seen


async def rebuild(api: httpx.AsyncClient, tenant: Tenant, vps_id: str, body: Any = None) -> httpx.Response:
    return await api.post(f"{V1}/vps/{vps_id}/rebuild", json={} if body is None else body, headers=tenant.headers)


async def test_a_running_vps_is_rebuilt_with_the_new_system_keys_and_password_and_runs_again(
    api, make_tenant, core, rebuilds
) -> None:
    tenant = make_tenant()
    old_key, new_key = ed25519_public_key("old@laptop"), ed25519_public_key("new@desk")
    vps = await create_running_vps(api, tenant, ssh_keys=[old_key])
    before = machine(core, number(vps))
    assert (before.image, before.disk_generation) == ("ubuntu-22-04", 0)

    r = await rebuild(api, tenant, vps["id"], {"operating_system": "debian-12", "ssh_keys": [new_key]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["message"] == "VPS rebuild started"
    data = body["data"]
    assert data["status"] == "rebuilding" and data["operating_system"] == "Debian 12" and data["operation_id"]
    password = data["root_password"]
    assert len(password) >= 16
    keys = (await api.get("/api/ssh-keys", headers=tenant.headers)).json()["ssh_keys"]
    new_id = next(k["id"] for k in keys if k["public_key"].split()[1] == new_key.split()[1])
    assert [k["id"] for k in data["ssh_keys"]] == [new_id]

    after = await wait_for(api, tenant, vps["id"], "running")
    assert "root_password" not in after
    assert after["operating_system"] == "Debian 12" and after["ip_address"] == vps["ip_address"]
    assert [k["id"] for k in after["ssh_keys"]] == [new_id]
    # The machine is the same one, with a fresh disk of the new image and only the new key.
    rebuilt = machine(core, number(vps))
    assert rebuilt.id == before.id and rebuilt.state == "running"
    assert (rebuilt.image, rebuilt.disk_generation, rebuilt.ssh_keys) == ("debian-12", 1, new_key)
    # The provider got the password as a crypt(3) hash; the database keeps neither, once the operation ended.
    [request] = rebuilds
    assert request.image == "debian-12" and request.ssh_public_keys == (new_key,)
    assert request.root_password_hash and password not in request.root_password_hash
    assert crypt.crypt(password, request.root_password_hash) == request.root_password_hash
    op = (await api.get(f"{V1}/operations/{data['operation_id']}", headers=tenant.headers)).json()["data"]
    assert (op["kind"], op["status"]) == ("rebuild", "succeeded"), op
    with core.db.read() as s:
        params = s.scalar(select(Operation.params).where(Operation.id == data["operation_id"]))
    assert params is None
    assert events_of(core, number(vps)) == ["vps.rebuild_requested", "vps.rebuilt"]
    # The other faces show the new image too.
    server = (await api.get(f"/api/servers/{number(vps)}", headers=tenant.headers)).json()
    assert server["image"]["slug"] == "debian-12" and server["status"] == "running"


async def test_a_stopped_vps_keeps_its_system_keys_and_backups_and_stays_stopped(
    api, make_tenant, core, rebuilds
) -> None:
    tenant = make_tenant()
    key = ed25519_public_key("kept@laptop")
    vps = await create_running_vps(api, tenant, ssh_keys=[key])
    made = await api.post(f"{V1}/vps/{vps['id']}/backups", json={"name": "before"}, headers=tenant.headers)
    [backup] = await settled_backups(api, tenant, vps["id"])
    assert (await api.post(f"{V1}/vps/{vps['id']}/stop", headers=tenant.headers)).status_code == 200
    await wait_for(api, tenant, vps["id"], "stopped")

    r = await rebuild(api, tenant, vps["id"])
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "rebuilding" and data["operating_system"] == vps["operating_system"]
    assert data["ssh_keys"] == vps["ssh_keys"]
    after = await wait_for(api, tenant, vps["id"], "stopped")
    await settled(core, number(vps))
    assert after["operating_system"] == vps["operating_system"] and after["ssh_keys"] == vps["ssh_keys"]
    rebuilt = machine(core, number(vps))
    assert (rebuilt.state, rebuilt.image, rebuilt.disk_generation, rebuilt.ssh_keys) == (
        "stopped",
        "ubuntu-22-04",
        1,
        key,
    )
    assert [r.ssh_public_keys for r in rebuilds] == [(key,)]
    assert (
        [b["id"] for b in await settled_backups(api, tenant, vps["id"])]
        == [backup["id"]]
        == [made.json()["data"]["id"]]
    )
    # A second rebuild makes a second new password.
    again = await rebuild(api, tenant, vps["id"], {"ssh_keys": []})
    assert again.status_code == 200, again.text
    assert again.json()["data"]["root_password"] != data["root_password"]
    assert again.json()["data"]["ssh_keys"] == []
    await settled(core, number(vps))
    assert machine(core, number(vps)).ssh_keys == ""
    assert operations_of(core, number(vps))[-2:] == [("rebuild", "succeeded"), ("rebuild", "succeeded")]


def set_server(core: Any, server_id: int, **values: Any) -> None:
    with core.db.write() as s:
        s.execute(update(Server).where(Server.id == server_id).values(**values))


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"status": "creating"}, "must be running or stopped"),
        ({"status": "error"}, "must be running or stopped"),
        ({"task_state": "stopping"}, "busy (stopping)"),
        ({"suspended_at": datetime.now(UTC)}, "suspended by an administrator"),
    ],
)
async def test_states_that_do_not_allow_it_are_409_and_change_nothing(api, make_tenant, core, values, says) -> None:
    tenant = make_tenant()
    vps = await create_running_vps(api, tenant)
    set_server(core, number(vps), **values)
    r = await rebuild(api, tenant, vps["id"], {"operating_system": "debian-12"})
    assert r.status_code == 409, r.text
    assert error_of(r)["code"] == "CONFLICT" and says in error_of(r)["message"], r.text
    server = (await api.get(f"/api/servers/{number(vps)}", headers=tenant.headers)).json()
    assert server["image"]["slug"] == "ubuntu-22-04"
    assert [kind for kind, _ in operations_of(core, number(vps))] == ["create"]


async def test_an_unknown_system_is_422_naming_the_field_and_another_accounts_vps_is_404(
    api, make_tenant, core
) -> None:
    owner, intruder = make_tenant(), make_tenant()
    vps = await create_running_vps(api, owner)
    for body, field in (
        ({"operating_system": "centos-8"}, "operating_system"),
        ({"operating_system": ""}, "operating_system"),
        ({"ssh_keys": ["ssh-rsa AAAA nope"]}, "ssh_keys[0]"),
        ({"colour": "blue"}, "colour"),
    ):
        r = await rebuild(api, owner, vps["id"], body)
        assert r.status_code == 422 and error_of(r)["details"]["field"] == field, (body, r.text)
    r = await rebuild(api, intruder, vps["id"], {"operating_system": "debian-12"})
    assert r.status_code == 404 and error_of(r)["code"] == "NOT_FOUND", r.text
    assert (await api.get(f"{V1}/vps/{vps['id']}", headers=owner.headers)).json()["data"] == vps
    assert [kind for kind, _ in operations_of(core, number(vps))] == ["create"]
    assert (await api.get("/api/ssh-keys", headers=owner.headers)).json()["total"] == 0
