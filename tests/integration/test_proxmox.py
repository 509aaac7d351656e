"""What the Proxmox VE provider promises beyond the driver contract, against the fake PVE API (tests/fakeproxmox.py)
replaying the recorded replies of tests/fixtures/proxmox: the clone and cloud-init parameters it sends, the tasks it
waits on, how Proxmox's errors become PROXMOX_ERROR, and that a retried create never makes a second VM."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy import select

from cloudplane.api.cloudvps.envelope import cloudvps_renderer
from cloudplane.config import Settings
from cloudplane.db.tables import Operation
from cloudplane.domain.errors import NotFound, ProviderError, ProxmoxError
from cloudplane.providers import registry
from cloudplane.providers.base import CreateRequest, MachineState, token_hash
from cloudplane.providers.proxmox import encode_ssh_keys, machine_state
from tests.conftest import eventually
from tests.contract.conftest import proxmox_provider
from tests.fakeproxmox import FOREIGN_VMID, TOKEN_ID, TOKEN_SECRET, FakeProxmox

from .test_locations import placed

KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIProxmoxKey+with/plus proxmox@test",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 second@test",
)
HASH = "$6$rounds=4096$cloudplanesalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"


def request_for(token: str = "op-1", **changes: Any) -> CreateRequest:
    request = CreateRequest(
        token=token,
        name="web",
        hostname="web.example.com",
        cpu=2,
        ram_mb=2048,
        disk_gb=20,
        image="debian-12",
        location="ams1",
        ssh_public_keys=KEYS,
        root_password_hash=HASH,
    )
    return dataclasses.replace(request, **changes)


@pytest.fixture
def fake() -> Iterator[FakeProxmox]:
    fake = FakeProxmox()
    yield fake
    fake.close()


@pytest.fixture
def provider(fake: FakeProxmox) -> Any:
    return proxmox_provider(fake)


async def test_a_server_is_a_full_clone_of_its_images_template(fake: FakeProxmox) -> None:
    provider = proxmox_provider(fake, storage="ceph-vm")
    machine = await provider.create(request_for())
    [clone] = fake.calls("POST", r"^nodes/pve/qemu/9000/clone$")
    assert clone["newid"] == machine.ref == "101"  # the lowest free VMID, from /cluster/nextid
    assert (clone["name"], clone["full"], clone["storage"]) == ("web.example.com", "1", "ceph-vm")
    assert "cloudplane-token: op-1" in clone["description"].splitlines()
    assert machine.state == MachineState.RUNNING and machine.hostname == "web.example.com"
    assert fake.vms[101].config["tags"] == f"cloudplane;cp-{token_hash('op-1')}"
    assert fake.vms[101].config["scsi0"] == "local-lvm:vm-101-disk-0,size=20G"  # grown to the plan's disk

    linked = proxmox_provider(fake, full_clone=False, storage="ceph-vm")
    await linked.create(request_for("op-2", hostname="db.example.com", image="ubuntu-22-04"))
    [clone] = fake.calls("POST", r"^nodes/pve/qemu/9001/clone$")
    assert clone["full"] == "0" and "storage" not in clone  # a linked clone stays on the template's storage


async def test_cloud_init_gets_root_its_keys_its_password_hash_and_the_size(fake: FakeProxmox, provider: Any) -> None:
    await provider.create(request_for())
    [options, tags] = fake.calls("PUT", r"^nodes/pve/qemu/101/config$")
    assert (options["cores"], options["memory"], options["ciuser"], options["ipconfig0"]) == (
        "2",
        "2048",
        "root",
        "ip=dhcp",
    )
    # URL-encoded as Proxmox insists, on top of the form encoding: no space, no raw `+` or `/`.
    assert options["sshkeys"] == encode_ssh_keys(KEYS)
    assert not set(" +/\n") & set(options["sshkeys"])
    assert unquote(options["sshkeys"]).split("\n") == list(KEYS)
    # A crypt hash: Proxmox keeps it as it is (it hashes only what is not one already) and hands it to cloud-init.
    assert options["cipassword"] == HASH
    assert set(tags) == {"tags"}  # tagged last, once all else is done
    [resize] = fake.calls("PUT", r"^nodes/pve/qemu/101/resize$")
    assert resize == {"disk": "scsi0", "size": "20G"}


async def test_every_task_is_waited_on_until_it_stops(fake: FakeProxmox, provider: Any) -> None:
    fake.task_polls = 3  # each task answers `running` three times before `stopped`
    machine = await provider.create(request_for())
    upids = {path.split("/")[3] for m, path, _ in fake.requests if path.endswith("/status") and "tasks" in path}
    assert {upid.split(":")[5] for upid in upids} == {"qmclone", "qmresize", "qmstart"}
    for upid in upids:
        assert len(fake.calls("GET", rf"^nodes/pve/tasks/{re.escape(upid)}/status$")) == 4
    await provider.stop(machine.ref)
    assert machine_state(await provider._status(machine.ref)) == MachineState.STOPPED


async def test_a_task_that_fails_raises_its_exit_status_and_log_tail(fake: FakeProxmox, provider: Any) -> None:
    machine = await provider.create(request_for())
    await provider.stop(machine.ref)
    fake.failing_tasks.add("qmstart")
    with pytest.raises(ProxmoxError) as failed:
        await provider.start(machine.ref)
    error = failed.value
    assert not error.retryable and error.code == "PROXMOX_ERROR"
    assert error.details["exitstatus"] == "start failed: QEMU exited with code 1"
    assert "Could not open '/dev/pve/vm-101-disk-0'" in error.message
    assert error.message.endswith("TASK ERROR: start failed: QEMU exited with code 1")


async def test_a_create_whose_start_fails_destroys_the_vm(fake: FakeProxmox, provider: Any) -> None:
    fake.failing_tasks.add("qmstart")
    with pytest.raises(ProxmoxError, match="start failed"):
        await provider.create(request_for())
    assert sorted(fake.vms) == [FOREIGN_VMID, 9000, 9001]
    assert fake.calls("DELETE", r"^nodes/pve/qemu/101$") == [{"purge": "1", "destroy-unreferenced-disks": "1"}]


async def test_proxmox_errors_are_retryable_for_5xx_and_not_for_4xx(fake: FakeProxmox, provider: Any) -> None:
    machine = await provider.create(request_for())
    fake.fail_next("GET", r"status/current$", "server_error")
    with pytest.raises(ProxmoxError) as server_error:
        await provider.metrics(machine.ref)
    assert server_error.value.retryable and server_error.value.details["status"] == 500
    assert "got lock request timeout" in server_error.value.message

    fake.fail_next("PUT", r"config$", "bad_parameter")
    with pytest.raises(ProxmoxError) as bad:
        await provider.create(request_for("op-2", hostname="two.example.com"))
    assert not bad.value.retryable and "invalid urlencoded string" in bad.value.message
    assert [m.token for m in await provider.list()] == ["op-1"]  # the half-made VM went again

    fake.fail_next("GET", r"status/current$", "not_json")
    with pytest.raises(ProxmoxError, match="something other than JSON: '<html>") as not_json:
        await provider.get(machine.ref)
    assert not_json.value.retryable

    wrong = proxmox_provider(fake, token_secret="not-the-secret")
    with pytest.raises(ProxmoxError) as unauthorized:
        await wrong.get(machine.ref)
    assert not unauthorized.value.retryable and unauthorized.value.details["status"] == 401
    assert "CLOUDPLANE_PROXMOX_TOKEN_SECRET" in unauthorized.value.message

    closed = proxmox_provider(fake)
    fake.close()
    with pytest.raises(ProxmoxError) as unreachable:
        await closed.get(machine.ref)
    assert unreachable.value.retryable and "did not answer" in unreachable.value.message


def test_the_cloudvps_face_renders_them_as_proxmox_error() -> None:
    response = cloudvps_renderer(ProxmoxError("Proxmox (https://pve:8006) answered GET /version with 500: boom"))
    assert response.status_code == 502
    assert json.loads(response.body)["error"]["code"] == "PROXMOX_ERROR"
    assert issubclass(ProxmoxError, ProviderError)  # workflows retry it as any provider error


async def test_a_retried_create_never_makes_a_second_vm(fake: FakeProxmox, provider: Any) -> None:
    first = await provider.create(request_for())
    assert (await provider.create(request_for())).ref == first.ref
    assert len(fake.calls("POST", r"/clone$")) == 1

    # A create that stopped between its clone and the tags: the retry finds the clone by its name and description.
    vmid = await provider._clone(request_for("op-2", hostname="two.example.com"), 9000)
    again = await provider.create(request_for("op-2", hostname="two.example.com"))
    assert again.ref == vmid and again.state == MachineState.RUNNING and again.token == "op-2"
    assert len(fake.calls("POST", r"/clone$")) == 2
    assert sorted(m.token or "" for m in await provider.list()) == ["op-1", "op-2"]


async def test_a_vmid_taken_meanwhile_is_retried_with_the_next_one(fake: FakeProxmox, provider: Any) -> None:
    fake.fail_next("POST", r"/clone$", "vmid_taken")
    machine = await provider.create(request_for())
    assert len(fake.calls("GET", r"^cluster/nextid$")) == 2
    assert [m.ref for m in await provider.list()] == [machine.ref]


async def test_foreign_vms_and_templates_are_never_touched(fake: FakeProxmox, provider: Any) -> None:
    for vmid in (str(FOREIGN_VMID), "9000"):
        assert await provider.get(vmid) is None
        await provider.delete(vmid)
        with pytest.raises(NotFound):
            await provider.stop(vmid)
    assert fake.vms[FOREIGN_VMID].status == "running" and 9000 in fake.vms
    assert await provider.list() == []


async def test_an_image_without_a_template_is_refused_before_anything_is_made(fake: FakeProxmox, provider: Any) -> None:
    with pytest.raises(ProxmoxError, match="has no Proxmox template") as refused:
        await provider.create(request_for(image="arch"))
    assert not refused.value.retryable and not fake.calls("POST", r"/clone$")
    assert provider.capabilities.images == frozenset({"debian-12", "ubuntu-22-04"})
    assert proxmox_provider(fake, default_template=9000).capabilities.images is None


def test_templates_come_from_the_environment_in_either_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDPLANE_PROXMOX_TEMPLATES", "debian-12=9000, ubuntu-22-04=9001")
    assert Settings().proxmox_templates == {"debian-12": 9000, "ubuntu-22-04": 9001}
    monkeypatch.setenv("CLOUDPLANE_PROXMOX_TEMPLATES", '{"debian-12": 9000}')
    assert Settings().proxmox_templates == {"debian-12": 9000}
    monkeypatch.setenv("CLOUDPLANE_PROXMOX_TEMPLATES", "debian-12")
    with pytest.raises(ValueError, match="is not image=vmid"):
        Settings()


def _pointed_at(core: Any, fake: FakeProxmox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        core,
        "settings",
        core.settings.model_copy(
            update={
                "proxmox_url": fake.url,
                "proxmox_token_id": TOKEN_ID,
                "proxmox_token_secret": TOKEN_SECRET,
                "proxmox_node": "pve",
                "proxmox_templates": {"debian-12": 9000},
                "proxmox_ca_file": fake.ca_file,
            }
        ),
    )


async def test_a_location_on_proxmox_shows_in_the_health_check(
    client: Any, make_tenant: Any, core: Any, fake: FakeProxmox, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = make_tenant("admin")
    _pointed_at(core, fake, monkeypatch)
    with placed(core, {"fra1": "proxmox"}) as made:
        assert made.get("proxmox").capabilities.images == frozenset({"debian-12"})
        r = await client.get("/api/v1/admin/system/health", headers=admin.headers)
        assert r.json()["data"]["services"]["proxmox"] == "online", r.text
        fake.fail_next("GET", r"^version$", "server_error")
        r = await client.get("/api/v1/admin/system/health", headers=admin.headers)
        data = r.json()["data"]
        assert data["services"]["proxmox"] == "offline" and data["status"] == "degraded"
        assert "got lock request timeout" in data["checks"]["proxmox"]["error"]


async def test_a_proxmox_location_without_its_settings_is_unavailable_saying_which(core: Any) -> None:
    with placed(core, {"fra1": "proxmox"}) as made:
        assert made.unavailable == {
            "proxmox": "ConfigurationError: the proxmox provider needs CLOUDPLANE_PROXMOX_URL, CLOUDPLANE_PROXMOX_TOKEN_ID, "
            "CLOUDPLANE_PROXMOX_TOKEN_SECRET"
        }
    assert "proxmox" in registry.PROVIDER_FACTORIES


async def test_a_vps_at_a_proxmox_location_is_a_vm_there_and_its_failures_say_proxmox_error(
    client: Any, tenant: Any, core: Any, fake: FakeProxmox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pointed_at(core, fake, monkeypatch)
    monkeypatch.setattr(fake, "task_polls", 0)
    with placed(core, {"fra1": "proxmox"}) as made:
        monkeypatch.setattr(made.get("proxmox"), "task_poll_s", 0.01)
        body = {"name": "Proxmox VPS", "plan_id": "plan-starter", "location": "fra1"}
        created = await client.post("/api/v1/vps", json=body, headers=tenant.headers)
        assert created.status_code == 201, created.text
        path = f"/api/v1/vps/{created.json()['data']['id']}"

        async def vps() -> dict[str, Any]:
            return (await client.get(path, headers=tenant.headers)).json()["data"]

        running = await eventually(vps, lambda v: v["status"] == "running")
        assert running["operating_system"] == "Debian 12"
        [machine] = await made.get("proxmox").list()
        assert fake.vms[int(machine.ref)].status == "running"

        # A failure at Proxmox ends the operation with PROXMOX_ERROR and the task's own words.
        fake.failing_tasks.add("qmstart")
        failed = await client.post("/api/v1/vps", json={**body, "name": "Doomed"}, headers=tenant.headers)
        assert failed.status_code == 201, failed.text
        doomed = f"/api/v1/vps/{failed.json()['data']['id']}"
        await eventually(
            lambda: client.get(doomed, headers=tenant.headers), lambda r: r.json()["data"]["status"] == "error"
        )
        with core.db.read() as s:
            operation = s.scalars(
                select(Operation).where(
                    Operation.server_id == int(failed.json()["data"]["id"].removeprefix("vps-")),
                    Operation.kind == "create",
                )
            ).first()
        assert operation is not None and operation.error_code == "PROXMOX_ERROR"
        assert "start failed: QEMU exited with code 1" in (operation.error or "")
        assert [m.ref for m in await made.get("proxmox").list()] == [machine.ref]  # the failed VM went again

        assert (await client.delete(path, headers=tenant.headers)).status_code in (200, 202, 204)
        await eventually(lambda: made.get("proxmox").list(), lambda ms: ms == [])
        # Nothing of this test's stays live on a provider the shared service no longer has once it leaves `placed`
        # (the reconciler's tests would find it there).
        assert (await client.delete(doomed, headers=tenant.headers)).status_code == 200
        for gone in (path, doomed):
            await eventually(
                functools.partial(client.get, gone, headers=tenant.headers), lambda r: r.status_code == 404
            )
