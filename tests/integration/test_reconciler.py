"""The reconciler: machines removed, stopped or started behind Cloudplane's back (with the provider's own tools)
bring their servers in line; servers an operation holds are left alone; machines no server owns are reported.

The simulator's own tool is its store (the `sim_machines` table); libvirt's is the libvirt API itself."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from cloudplane.core import Core
from cloudplane.db.tables import Operation, Server, utcnow
from cloudplane.domain.errors import ProviderError
from cloudplane.domain.states import ACTIONS
from cloudplane.observability import METRICS
from cloudplane.providers.base import CreateRequest
from cloudplane.providers.simulator import sim_machines
from cloudplane.services import servers as server_service
from cloudplane.workflows import reconciler
from cloudplane.workflows.reconciler import reconcile_once
from tests.conftest import eventually
from tests.integration.test_locations import placed

TEST_HOST = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt" / "testhost.xml"


def machine_request(hostname: str = "by-hand") -> CreateRequest:
    return CreateRequest(
        token=str(uuid.uuid4()),
        name=hostname,
        hostname=hostname,
        cpu=1,
        ram_mb=1024,
        disk_gb=25,
        image="ubuntu-22-04",
        location="nyc1",
    )


def server_row(core: Core, server_id: int) -> Any:
    with core.db.read() as s:
        return s.execute(select(Server).where(Server.id == server_id)).scalar_one()


def sim_id(core: Core, server_id: int) -> int:
    return int(server_row(core, server_id).provider_ref.removeprefix("sim-"))


def set_sim_state(core: Core, server_id: int, state: str) -> None:
    with core.providers.get("simulator").db.write() as s:
        s.execute(update(sim_machines).where(sim_machines.c.id == sim_id(core, server_id)).values(state=state))


def repairs_of(report: reconciler.Report, *server_ids: int) -> list[tuple[int, str, str]]:
    return sorted((r.server_id, r.was, r.now) for r in report.repairs if r.server_id in server_ids)


@pytest.fixture
def get_server(client, tenant):  # type: ignore[no-untyped-def]
    async def get(server_id: int) -> dict[str, Any]:
        return (await client.get(f"/api/servers/{server_id}", headers=tenant.headers)).json()

    return get


async def test_a_machine_stopped_or_started_outside_cloudplane_moves_its_server(
    core, tenant, create_running_server, get_server
) -> None:
    server = await create_running_server(tenant)
    set_sim_state(core, server["id"], "stopped")
    report = await reconcile_once(core)
    assert repairs_of(report, server["id"]) == [(server["id"], "running", "stopped")]
    assert (await get_server(server["id"]))["status"] == "stopped"
    assert repairs_of(await reconcile_once(core), server["id"]) == []  # in line now: nothing more to do

    set_sim_state(core, server["id"], "running")
    assert repairs_of(await reconcile_once(core), server["id"]) == [(server["id"], "stopped", "running")]
    assert (await get_server(server["id"]))["status"] == "running"

    set_sim_state(core, server["id"], "error")
    assert repairs_of(await reconcile_once(core), server["id"]) == [(server["id"], "running", "error")]
    assert "error state at the provider (simulator)" in server_row(core, server["id"]).error_message


async def test_a_machine_removed_outside_cloudplane_leaves_an_error_the_user_sees_and_can_delete(
    client, core, tenant, create_running_server, get_server
) -> None:
    server = await create_running_server(tenant)
    with core.providers.get("simulator").db.write() as s:
        s.execute(delete(sim_machines).where(sim_machines.c.id == sim_id(core, server["id"])))
    report = await reconcile_once(core)
    assert repairs_of(report, server["id"]) == [(server["id"], "running", "error")]
    gone = await get_server(server["id"])
    assert gone["status"] == "error" and gone["ip_address"] is None
    vps = (await client.get(f"/api/v1/vps/vps-{server['id']}", headers=tenant.headers)).json()["data"]
    assert vps["status"] == "error"
    assert vps["error_message"] == (
        "Its machine was removed at the provider (simulator) outside Cloudplane; delete this server to clear it."
    )
    assert server_row(core, server["id"]).provider_ref is None  # a reused ref must never reach another machine

    assert (await client.delete(f"/api/servers/{server['id']}", headers=tenant.headers)).status_code == 204
    await eventually(
        lambda: client.get(f"/api/servers/{server['id']}", headers=tenant.headers), lambda r: r.status_code == 404
    )


async def test_servers_an_operation_holds_are_left_alone(core, tenant, create_running_server) -> None:
    claimed, busy = await create_running_server(tenant), await create_running_server(tenant)
    # One is claimed by an action (task state set), the other held by an unfinished operation that sets none.
    with core.db.write() as s:
        s.execute(update(Server).where(Server.id == claimed["id"]).values(task_state="stopping"))
        op = Operation(
            id=str(uuid.uuid4()),
            account_id=tenant.principal.account_id,
            kind="delete_snapshot",
            target_type="server",
            target_id=str(busy["id"]),
            server_id=busy["id"],
            status="running",
        )
        s.add(op)
    for server in (claimed, busy):
        set_sim_state(core, server["id"], "stopped")
    try:
        assert repairs_of(await reconcile_once(core), claimed["id"], busy["id"]) == []
        assert {server_row(core, i).status for i in (claimed["id"], busy["id"])} == {"running"}
    finally:
        with core.db.write() as s:
            s.execute(update(Server).where(Server.id == claimed["id"]).values(task_state=None))
            s.execute(update(Operation).where(Operation.id == op.id).values(status="succeeded"))
    # Once nothing holds them, they follow their machines.
    assert repairs_of(await reconcile_once(core), claimed["id"], busy["id"]) == [
        (claimed["id"], "running", "stopped"),
        (busy["id"], "running", "stopped"),
    ]


async def test_a_server_claimed_between_the_read_and_the_update_is_not_overwritten(
    core, tenant, create_running_server
) -> None:
    server = await create_running_server(tenant)
    [seen] = reconciler.settled_servers(core, after=server["id"] - 1, limit=1)
    with core.db.write() as s:
        server_service.claim(core, s, tenant.principal, server["id"], ACTIONS["stop"])
    try:
        assert not reconciler.apply(core, seen, {"status": "error"})
        assert (server_row(core, server["id"]).status, server_row(core, server["id"]).task_state) == (
            "running",
            "stopping",
        )
    finally:
        with core.db.write() as s:
            s.execute(update(Server).where(Server.id == server["id"]).values(task_state=None))
    # A change since the read (here a rename) is enough to refuse too: the row is not as it was read.
    [seen] = reconciler.settled_servers(core, after=server["id"] - 1, limit=1)
    server_service.rename_server(core, tenant.principal, server["id"], "renamed")
    assert not reconciler.apply(core, seen, {"status": "stopped"})
    assert server_row(core, server["id"]).status == "running"


async def test_two_processes_reconciling_at_once_repair_a_server_once(core, tenant, create_running_server) -> None:
    server = await create_running_server(tenant)
    other = Core.build(core.settings)  # a second API process: its own engines and providers, the same database
    try:
        set_sim_state(core, server["id"], "stopped")
        reports = await asyncio.gather(*(reconcile_once(c) for c in (core, other, core, other)))
        assert sum(len(repairs_of(r, server["id"])) for r in reports) == 1
        assert server_row(core, server["id"]).status == "stopped"
    finally:
        other.providers.get("simulator").db.dispose()
        other.db.dispose()


async def test_machines_no_server_owns_are_reported_not_destroyed(core, tenant, caplog, monkeypatch) -> None:
    simulator = core.providers.get("simulator")
    stray = await simulator.create(machine_request("stray"))
    # A create still running owns its machine before its ref is recorded on the server.
    in_flight = machine_request("in-flight")
    with core.db.write() as s:
        making = Server(
            account_id=tenant.principal.account_id,
            label="in flight",
            hostname="in-flight",
            status="creating",
            provider="simulator",
        )
        s.add(making)
        s.flush()
        s.add(
            Operation(
                id=in_flight.token,
                account_id=tenant.principal.account_id,
                kind="create",
                target_type="server",
                target_id=str(making.id),
                server_id=making.id,
                status="running",
            )
        )
    owned_machine = await simulator.create(in_flight)
    try:
        report = await reconcile_once(core)
        orphans = {o.ref: o for o in report.orphans if o.provider == "simulator"}
        assert stray.ref in orphans and orphans[stray.ref].hostname == "stray"
        assert owned_machine.ref not in orphans
        assert await simulator.get(stray.ref) is not None  # reported, left as it is

        # The periodic task logs an orphan when it first sees it, not on every pass.
        caplog.set_level(logging.WARNING, logger="cloudplane.workflows.reconciler")
        passes: list[reconciler.Report] = []

        async def counted(core: Core) -> reconciler.Report:
            passes.append(await reconcile_once(core))
            return passes[-1]

        monkeypatch.setattr(reconciler, "reconcile_once", counted)
        task = asyncio.create_task(reconciler.reconcile_periodically(core, 0.01))
        await eventually(lambda: asyncio.sleep(0, len(passes)), lambda n: n >= 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logged = [r.getMessage() for r in caplog.records if stray.ref in r.getMessage()]
        assert logged == [
            f"reconciler: simulator holds machine {stray.ref} (stray, running) that no server owns; left as it is"
        ]
    finally:
        await simulator.delete(stray.ref)
        await simulator.delete(owned_machine.ref)
        with core.db.write() as s:
            s.execute(update(Operation).where(Operation.id == in_flight.token).values(status="failed"))
            s.execute(update(Server).where(Server.id == making.id).values(status="deleted", deleted_at=utcnow()))


def sample(name: str, **labels: str) -> float:
    return METRICS.registry.get_sample_value(name, labels) or 0.0


def total(name: str) -> float:
    """A labelled metric summed over its labels."""
    return sum(s.value for family in METRICS.registry.collect() for s in family.samples if s.name == name)


async def test_a_pass_walks_the_fleet_in_batches_and_misses_no_server(
    core, tenant, create_running_server, monkeypatch
) -> None:
    first, last = await create_running_server(tenant), await create_running_server(tenant)
    set_sim_state(core, first["id"], "stopped")
    set_sim_state(core, last["id"], "stopped")
    simulator = core.providers.get("simulator")
    asked: list[int] = []
    pages: list[int] = []
    get_many, list_pages = simulator.get_many, simulator.list_pages

    async def counted_get_many(refs):  # type: ignore[no-untyped-def]
        asked.append(len(refs))
        return await get_many(refs)

    async def counted_list_pages(size):  # type: ignore[no-untyped-def]
        async for page in list_pages(size):
            pages.append(len(page))
            yield page

    monkeypatch.setattr(reconciler, "BATCH", 2)
    monkeypatch.setattr(simulator, "get_many", counted_get_many)
    monkeypatch.setattr(simulator, "list_pages", counted_list_pages)
    with core.db.read() as s:
        settled = len(s.scalars(select(Server.id).where(Server.status.in_(("running", "stopped")))).all())
    report = await reconcile_once(core)
    assert repairs_of(report, first["id"], last["id"]) == [
        (first["id"], "running", "stopped"),
        (last["id"], "running", "stopped"),
    ]
    # The simulator asked for two machines at a time (other providers' servers of the session are checked too),
    # and its inventory walked two machines at a time.
    assert max(asked) == 2 and 2 <= sum(asked) <= report.checked <= settled
    assert pages and max(pages) == 2 and sum(pages) >= 2


async def test_each_pass_reports_its_cost_and_findings_in_metrics(
    client, core, tenant, create_running_server, monkeypatch
) -> None:
    server = await create_running_server(tenant)
    simulator = core.providers.get("simulator")
    stray = await simulator.create(machine_request("stray-for-metrics"))
    set_sim_state(core, server["id"], "stopped")
    before = {
        "passes": sample("cloudplane_reconciler_pass_duration_seconds_count"),
        "checked": total("cloudplane_reconciler_servers_checked_total"),
        "repairs": sample("cloudplane_reconciler_repairs_total", provider="simulator", status="stopped"),
        "failures": sample("cloudplane_reconciler_provider_failures_total", provider="simulator"),
    }
    try:
        report = await reconcile_once(core)
    finally:
        await simulator.delete(stray.ref)
    exposed = (await client.get("/metrics")).text
    assert sample("cloudplane_reconciler_pass_duration_seconds_count") == before["passes"] + 1
    assert sample("cloudplane_reconciler_last_pass_duration_seconds") > 0
    assert "cloudplane_reconciler_last_pass_duration_seconds " in exposed
    assert total("cloudplane_reconciler_servers_checked_total") == before["checked"] + report.checked
    assert sample("cloudplane_reconciler_servers_checked_total", provider="simulator") >= 1
    assert (
        sample("cloudplane_reconciler_repairs_total", provider="simulator", status="stopped") == before["repairs"] + 1
    )
    simulator_orphans = [o for o in report.orphans if o.provider == "simulator"]
    assert stray.ref in {o.ref for o in simulator_orphans}
    assert sample("cloudplane_reconciler_orphans", provider="simulator") == len(simulator_orphans)
    assert 'cloudplane_reconciler_orphans{provider="simulator"}' in exposed

    async def unreachable(refs):  # type: ignore[no-untyped-def]
        raise ProviderError("the simulated cloud is unreachable", retryable=True)

    monkeypatch.setattr(simulator, "get_many", unreachable)
    report = await reconcile_once(core)
    assert report.failures["simulator"] == "the simulated cloud is unreachable"
    assert sample("cloudplane_reconciler_provider_failures_total", provider="simulator") == before["failures"] + 1


_in_pass: ContextVar[bool] = ContextVar("in_pass", default=False)


@pytest.mark.parametrize("store", ["servers", "machines"])
async def test_a_pass_whose_reads_block_holds_up_no_request(
    client, core, tenant, create_running_server, get_server, monkeypatch, store
) -> None:
    """A pass whose reads block (a slow disk, a locked table, a provider slow to list its machines) keeps the wait
    to itself: a request made meanwhile is answered while the pass still waits. Ordering only: the pass's reads wait
    until the test lets them go, which it does once the request is answered."""
    server = await create_running_server(tenant)
    db = core.db if store == "servers" else core.providers.get("simulator").db
    reading, go_on = threading.Event(), threading.Event()
    waited_in_vain: list[bool] = []
    read = db.read

    @contextlib.contextmanager
    def held_read():  # type: ignore[no-untyped-def]
        if _in_pass.get():
            reading.set()
            # Read on the event loop, the pass would hold the request until this wait gave up.
            waited_in_vain.append(not go_on.wait(timeout=10))
        with read() as session:
            yield session

    async def held_pass() -> reconciler.Report:
        _in_pass.set(True)  # seen by this task's reads, in whichever thread it makes them
        return await reconcile_once(core)

    monkeypatch.setattr(db, "read", held_read)
    running = asyncio.create_task(held_pass())
    try:
        await eventually(lambda: asyncio.sleep(0, reading.is_set()), bool)
        answered = await get_server(server["id"])
        answered_while_held = not go_on.is_set() and not any(waited_in_vain)
    finally:
        go_on.set()
        report = await running
    assert answered["id"] == server["id"] and answered["status"] == "running"
    assert answered_while_held, "the request waited for the pass's blocked read"
    assert report.checked >= 1 and not report.failures


async def test_the_reconciler_runs_in_the_api_process_unless_switched_off(core) -> None:
    switched_off = dataclasses.replace(core, settings=core.settings.model_copy(update={"reconcile_interval_s": 0}))
    assert reconciler.start_reconciler(switched_off) is None
    task = reconciler.start_reconciler(core)
    assert core.settings.reconcile_interval_s == 30 and task is not None and not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def libvirt_provider() -> Iterator[Any]:
    try:
        import libvirt  # noqa: F401
    except ImportError as error:
        # CI installs libvirt-python; a missing binding must show as a failure, never as a silent skip.
        pytest.fail(f"libvirt-python is not importable ({error})", pytrace=False)
    from cloudplane.providers.libvirt import LibvirtProvider

    provider = LibvirtProvider(f"test://{TEST_HOST}")  # its own in-memory host, per connection
    yield provider
    provider.close()


async def running_server_in_fra1(client, core, tenant, get_server, provider: str, image: str) -> tuple[dict, Any]:  # type: ignore[no-untyped-def]
    """A server made through the API in fra1, running; and its row, which must say it runs on `provider`."""
    r = await client.post(
        "/api/servers",
        json={"label": provider, "plan_slug": "basic-1gb", "image_slug": image, "location_slug": "fra1"},
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text
    server = await eventually(lambda: get_server(r.json()["id"]), lambda s: s["status"] == "running")
    row = server_row(core, server["id"])
    assert row.provider == provider
    return server, row


async def test_a_libvirt_domain_changed_or_removed_with_libvirt_itself_brings_its_server_in_line(
    client, core, tenant, libvirt_provider, get_server
) -> None:
    with placed(core, {"fra1": "libvirt"}, libvirt=libvirt_provider):
        server, row = await running_server_in_fra1(client, core, tenant, get_server, "libvirt", "debian-12")
        # The provider's own connection: the test driver keeps one in-memory host per connection.
        domain = libvirt_provider._connection().lookupByUUIDString(row.provider_ref)
        stray = await libvirt_provider.create(machine_request("stray-domain"))

        domain.destroy()  # virsh destroy
        report = await reconcile_once(core)
        assert repairs_of(report, server["id"]) == [(server["id"], "running", "stopped")]
        assert (await get_server(server["id"]))["status"] == "stopped"
        # Domains Cloudplane did not make (the test host's own) are not its business; its stray one is reported.
        assert [o.ref for o in report.orphans if o.provider == "libvirt"] == [stray.ref]

        domain.create()  # virsh start
        assert repairs_of(await reconcile_once(core), server["id"]) == [(server["id"], "stopped", "running")]

        domain.destroy()
        domain.undefine()  # virsh undefine
        assert repairs_of(await reconcile_once(core), server["id"]) == [(server["id"], "running", "error")]
        vps = (await client.get(f"/api/v1/vps/vps-{server['id']}", headers=tenant.headers)).json()["data"]
        assert vps["status"] == "error" and "removed at the provider (libvirt)" in vps["error_message"]

        assert (await client.delete(f"/api/servers/{server['id']}", headers=tenant.headers)).status_code == 204
        await eventually(
            lambda: client.get(f"/api/servers/{server['id']}", headers=tenant.headers), lambda r: r.status_code == 404
        )
        await libvirt_provider.delete(stray.ref)
        assert await libvirt_provider.list() == []


async def test_an_lxc_container_changed_or_removed_with_lxc_tools_brings_its_server_in_line(
    client, core, tenant, lxc_host_ready, tmp_path, get_server
) -> None:
    import subprocess

    from tests.conftest import destroy_lxc_leftovers

    provider = lxc_host_ready.provider(tmp_path / "lxc")

    def lxc_tool(*args: str) -> None:
        subprocess.run([*args, "-P", str(provider.config.lxc_path), "-n", row.provider_ref], check=True)

    try:
        with placed(core, {"fra1": "lxc"}, lxc=provider):
            server, row = await running_server_in_fra1(client, core, tenant, get_server, "lxc", "busybox")

            lxc_tool("lxc-stop", "-k")
            assert repairs_of(await reconcile_once(core), server["id"]) == [(server["id"], "running", "stopped")]
            lxc_tool("lxc-start")
            lxc_tool("lxc-wait", "-s", "RUNNING")
            assert repairs_of(await reconcile_once(core), server["id"]) == [(server["id"], "stopped", "running")]
            lxc_tool("lxc-destroy", "-f")
            assert repairs_of(await reconcile_once(core), server["id"]) == [(server["id"], "running", "error")]
            assert (await client.delete(f"/api/servers/{server['id']}", headers=tenant.headers)).status_code == 204
            await eventually(
                lambda: client.get(f"/api/servers/{server['id']}", headers=tenant.headers),
                lambda r: r.status_code == 404,
            )
    finally:
        destroy_lxc_leftovers(provider)
