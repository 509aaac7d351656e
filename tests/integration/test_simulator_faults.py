"""Provider faults: errors, latency and creates that succeed but report failure end cleanly, never orphaned."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from sqlalchemy import select

from cloudplane.db.tables import Operation, Server
from cloudplane.providers.clock import ManualClock
from cloudplane.providers.simulator import sim_machines
from tests.conftest import SERVER_BODY, eventually


@contextlib.contextmanager
def faults(core, **changes):
    """The shared simulator with these faults, on a clock of its own: injected latency passes on that clock,
    which each wait moves on by itself, so no test waits on the wall clock for it."""
    provider = core.providers.get("simulator")
    saved, saved_clock = provider.config, provider.clock
    provider.config = dataclasses.replace(saved, **changes)
    provider.clock = clock = ManualClock(saved_clock.now(), autoadvance=True)
    try:
        yield clock
    finally:
        provider.config, provider.clock = saved, saved_clock


def machines_made_by(core, tokens) -> list[str]:
    """Tokens of the simulator's machines made by these create operations, one entry per machine."""
    with core.providers.get("simulator").db.read() as s:
        return s.execute(select(sim_machines.c.token).where(sim_machines.c.token.in_(list(tokens)))).scalars().all()


async def _settle(client, tenant, ids):
    async def statuses():
        return [(await client.get(f"/api/servers/{i}", headers=tenant.headers)).json() for i in ids]

    return await eventually(statuses, lambda ss: all(s["task_state"] is None for s in ss), timeout=60)


async def test_ghost_creates_never_double_a_machine(client, make_tenant, core) -> None:
    tenant = make_tenant()
    with faults(core, ghost_create_rate=0.5, seed=7):
        rs = await asyncio.gather(
            *(
                client.post("/api/servers", json={**SERVER_BODY, "label": f"g{i}"}, headers=tenant.headers)
                for i in range(8)
            )
        )
        ids = [r.json()["id"] for r in rs]
        servers = await _settle(client, tenant, ids)
    assert all(s["status"] in ("running", "error") for s in servers)
    with core.db.read() as s:
        tokens = s.scalars(select(Operation.id).where(Operation.server_id.in_(ids), Operation.kind == "create")).all()
        refs = s.scalars(select(Server.provider_ref).where(Server.id.in_(ids), Server.status == "running")).all()
    machines = machines_made_by(core, tokens)
    assert len(machines) == len(set(machines)) == sum(1 for x in servers if x["status"] == "running")
    assert len(refs) == len(set(refs))


async def test_a_create_that_always_reports_failure_is_found_by_the_retry(client, make_tenant, core) -> None:
    tenant = make_tenant()
    with faults(core, ghost_create_rate=1.0):
        r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
        (server,) = await _settle(client, tenant, [r.json()["id"]])
    assert server["status"] == "running"
    with core.db.read() as s:
        op = s.scalar(select(Operation).where(Operation.server_id == server["id"]))
    assert machines_made_by(core, [op.id]) == [op.id]


async def test_a_provider_that_always_fails_ends_in_error_with_a_reason(client, make_tenant, core) -> None:
    tenant = make_tenant()
    with faults(core, error_rate=1.0):
        r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
        (server,) = await _settle(client, tenant, [r.json()["id"]])
    assert server["status"] == "error"
    with core.db.read() as s:
        op = s.scalar(select(Operation).where(Operation.server_id == server["id"]))
        assert op.status == "failed" and "Simulated provider error during create" in op.error and op.params is None
    assert machines_made_by(core, [op.id]) == []
    # An errored server can still be deleted.
    assert (await client.delete(f"/api/servers/{server['id']}", headers=tenant.headers)).status_code == 204


async def test_a_machine_that_fails_to_boot_is_cleaned_up(client, make_tenant, core) -> None:
    tenant = make_tenant()
    with faults(core, boot_failure_rate=1.0):
        r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
        (server,) = await _settle(client, tenant, [r.json()["id"]])
    assert server["status"] == "error"
    with core.db.read() as s:
        op = s.scalar(select(Operation).where(Operation.server_id == server["id"]))
        assert op.status == "failed" and "error state" in op.error
    assert machines_made_by(core, [op.id]) == []


async def test_transient_errors_are_retried_to_success(client, make_tenant, core) -> None:
    tenant = make_tenant()
    with faults(core, error_rate=0.3, latency_ms=5, seed=3) as clock:
        started = clock.now()
        rs = [await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers) for _ in range(4)]
        servers = await _settle(client, tenant, [r.json()["id"] for r in rs])
    assert clock.now() > started  # every call's latency was spent on the simulator's clock
    # With 6 attempts per call, a 30% error rate almost never exhausts retries; the seed makes it certain.
    assert [s["status"] for s in servers] == ["running"] * 4
