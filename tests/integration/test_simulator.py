"""The simulator on its own: idempotent creates, timed transitions, seeded faults, snapshots and restore."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cloudplane.db.engine import Database
from cloudplane.domain.errors import ProviderError
from cloudplane.providers.base import CreateRequest, MachineState
from cloudplane.providers.simulator import SimulatorConfig, SimulatorProvider


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'sim.sqlite'}")
    yield database
    database.dispose()


def request(token: str | None = None) -> CreateRequest:
    return CreateRequest(
        token=token or str(uuid.uuid4()),
        name="n",
        hostname="h",
        cpu=1,
        ram_mb=1024,
        disk_gb=25,
        image="ubuntu-22-04",
        location="nyc1",
        ssh_public_keys=("ssh-ed25519 AAAA k",),
    )


async def test_create_is_idempotent_on_its_token(db) -> None:
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=0))
    token = str(uuid.uuid4())
    first, second = await asyncio.gather(sim.create(request(token)), sim.create(request(token)))
    assert first.ref == second.ref
    assert len(await sim.list()) == 1


async def test_transitions_take_their_scaled_time(db) -> None:
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=0.05))  # provisioning 0.3 s
    machine = await sim.create(request())
    assert machine.state == MachineState.PROVISIONING
    await asyncio.sleep(0.35)
    assert (await sim.get(machine.ref)).state == MachineState.RUNNING
    await sim.stop(machine.ref)
    assert (await sim.get(machine.ref)).state == MachineState.STOPPING
    await sim.stop(machine.ref)  # idempotent while on its way
    await asyncio.sleep(0.15)
    assert (await sim.get(machine.ref)).state == MachineState.STOPPED
    with pytest.raises(ProviderError):
        await sim.reboot(machine.ref)


async def test_restore_rolls_the_disk_back_and_delete_takes_snapshots_along(db) -> None:
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=0))
    machine = await sim.create(request())
    snap = await sim.snapshot(machine.ref, "snap-token")
    assert (await sim.snapshot(machine.ref, "snap-token")) == snap
    with pytest.raises(ProviderError, match="running"):
        await sim.restore(machine.ref, snap.ref)
    await sim.stop(machine.ref)
    await sim.get(machine.ref)
    await sim.restore(machine.ref, snap.ref)
    assert (await sim.get(machine.ref)).state == MachineState.STOPPED
    await sim.delete(machine.ref)
    await sim.delete(machine.ref)  # idempotent
    assert await sim.get(machine.ref) is None and await sim.list() == []
    await sim.delete_snapshot(snap.ref)  # already gone with its machine


async def test_unknown_ids(db) -> None:
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=0))
    assert await sim.get("sim-999") is None
    assert await sim.get("not-a-ref") is None
    assert await sim.find_by_token("nope") is None


async def test_the_same_seed_injects_the_same_faults(tmp_path) -> None:
    async def outcomes(path, seed):
        db = Database(f"sqlite:///{path}")
        sim = SimulatorProvider(db, SimulatorConfig(time_scale=0, error_rate=0.5, seed=seed))
        result = []
        for _ in range(30):
            try:
                await sim.list()
                result.append(True)
            except ProviderError:
                result.append(False)
        db.dispose()
        return result

    a = await outcomes(tmp_path / "a.sqlite", 11)
    b = await outcomes(tmp_path / "b.sqlite", 11)
    c = await outcomes(tmp_path / "c.sqlite", 12)
    assert a == b and a != c and True in a and False in a


async def test_metrics_are_plausible(db) -> None:
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=0))
    machine = await sim.create(request())
    await sim.get(machine.ref)
    metrics = await sim.metrics(machine.ref)
    assert 0 < metrics.cpu_percent <= 100 and 0 < metrics.memory_used_mb <= 1024
