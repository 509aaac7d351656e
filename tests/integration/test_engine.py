"""The workflow engine's own guarantees: a run that lost its operation to another process changes nothing, an
operation no executor holds is adopted and finished, and a database failure in the middle of a run is never taken
for the action's failure: the dispatcher runs the operation again and it finishes, with nothing cleaned up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from cloudplane.db.tables import Event, Operation, Server
from cloudplane.providers.simulator import sim_machines
from cloudplane.workflows import dispatcher, engine, steps
from tests.conftest import SERVER_BODY, eventually
from tests.integration.test_operations import operation_id_of, wait_finished


class HeldCreates:
    """The simulator's creates wait, once entered, until released: a run stopped in the middle of its provider
    call, for as long as a test needs."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10), "the create never reached the provider"


@pytest.fixture
def held(core, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldCreates]:
    provider = core.providers.get("simulator")
    original = provider.create
    holder = HeldCreates()

    async def create(request: Any) -> Any:
        holder.entered.set()
        await asyncio.to_thread(holder.release.wait, 10)
        return await original(request)

    monkeypatch.setattr(provider, "create", create)
    yield holder
    holder.release.set()


async def run_ended(op_id: str) -> None:
    runner = engine.current()
    assert runner is not None

    async def runs() -> bool:
        return runner.runs(op_id)

    await eventually(runs, lambda going: not going)


def operation(core, op_id: str) -> Any:
    with core.db.read() as s:
        return s.execute(select(Operation.status, Operation.executor_id).where(Operation.id == op_id)).one()


def machines_of(core, token: str) -> list[int]:
    with core.providers.get("simulator").db.read() as s:
        return list(s.scalars(select(sim_machines.c.id).where(sim_machines.c.token == token)))


@pytest.fixture
async def accepted(client, tenant, held) -> AsyncIterator[tuple[str, int]]:
    r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    assert r.status_code == 201, r.text
    await held.wait_entered()
    yield operation_id_of(r), r.json()["id"]


async def test_a_run_that_lost_its_operation_to_another_process_changes_nothing(
    client, tenant, core, held, accepted
) -> None:
    op_id, server_id = accepted
    # Another process takes the operation over, as the dispatcher does with a dead executor's.
    with core.db.write() as s:
        s.execute(update(Operation).where(Operation.id == op_id).values(executor_id="another-process"))
    held.release.set()
    await run_ended(op_id)

    assert tuple(operation(core, op_id)) == ("running", "another-process")
    server = (await client.get(f"/api/servers/{server_id}", headers=tenant.headers)).json()
    assert server["status"] == "starting" and server["task_state"] == "creating", server
    with core.db.read() as s:
        outcomes = s.scalars(select(Event.type).where(Event.operation_id == op_id)).all()
    assert outcomes == ["vps.create_requested"]

    # Its holder's run finds the machine the lost run made, by the operation's token: one machine, not two.
    runner = engine.current()
    assert runner is not None
    with core.db.write() as s:
        s.execute(update(Operation).where(Operation.id == op_id).values(executor_id=runner.executor_id))
    await asyncio.to_thread(dispatcher.current().resume_held)  # type: ignore[union-attr]
    assert (await wait_finished(client, tenant, op_id))["status"] == "succeeded"
    assert len(machines_of(core, op_id)) == 1


async def test_an_operation_no_executor_holds_is_adopted_and_finished(client, tenant, core, held, accepted) -> None:
    op_id, server_id = accepted
    # As a version of Cloudplane that ran operations in another engine leaves them.
    with core.db.write() as s:
        s.execute(update(Operation).where(Operation.id == op_id).values(executor_id=None))
    held.release.set()
    await run_ended(op_id)
    assert tuple(operation(core, op_id)) == ("running", None)

    sweeper = dispatcher.current()
    assert sweeper is not None
    await asyncio.to_thread(sweeper.adopt_unheld)
    assert operation(core, op_id).executor_id == sweeper.executor_id
    await asyncio.to_thread(sweeper.resume_held)
    assert (await wait_finished(client, tenant, op_id))["status"] == "succeeded"
    server = (await client.get(f"/api/servers/{server_id}", headers=tenant.headers)).json()
    assert server["status"] == "running"


async def test_a_database_failure_mid_run_is_retried_never_cleaned_up(client, tenant, core, monkeypatch) -> None:
    original = steps._update_rows
    failed: list[str] = []

    def flaky(job: steps.Job, op_values: dict[str, Any], changes: steps.Changes) -> None:
        if op_values.get("status") == "succeeded" and not failed:
            failed.append(job.id)
            raise OperationalError("UPDATE operations ...", None, Exception("database is locked"))
        original(job, op_values, changes)

    monkeypatch.setattr(steps, "_update_rows", flaky)
    r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    op_id = operation_id_of(r)
    # The dispatcher's next sweep (every 2 s) runs it again from where it got to.
    op = await wait_finished(client, tenant, op_id)
    assert failed == [op_id]
    assert op["status"] == "succeeded", op
    server = (await client.get(f"/api/servers/{r.json()['id']}", headers=tenant.headers)).json()
    assert server["status"] == "running" and server["ip_address"]
    assert len(machines_of(core, op_id)) == 1
    with core.db.read() as s:
        attempts = s.scalar(select(Operation.attempts).where(Operation.id == op_id))
        live = s.scalar(select(Server.deleted_at).where(Server.id == r.json()["id"]))
    assert attempts == 2 and live is None
