"""The simulator on its own: idempotent creates, timed transitions, seeded faults, snapshots and restore.
Time is a ManualClock the tests move on, so the simulator keeps its real-cloud timings and no test sleeps."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from cloudplane.db.engine import Database
from cloudplane.domain.errors import ProviderError
from cloudplane.providers.base import CreateRequest, MachineState
from cloudplane.providers.clock import ManualClock
from cloudplane.providers.simulator import SimulatorConfig, SimulatorProvider

START = datetime(2030, 1, 1, tzinfo=UTC)


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


@pytest.mark.parametrize("time_scale", [1.0, 0.5])
async def test_transitions_take_their_scaled_time_on_the_clock(db, time_scale: float) -> None:
    clock = ManualClock(START)
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=time_scale), clock=clock)

    async def state_after(seconds: float) -> MachineState:
        clock.advance(seconds * time_scale)
        return (await sim.get(machine.ref)).state

    machine = await sim.create(request())
    assert machine.state == MachineState.PROVISIONING
    assert await state_after(5.9) == MachineState.PROVISIONING
    assert await state_after(0.1) == MachineState.RUNNING
    await sim.stop(machine.ref)
    assert await state_after(0) == MachineState.STOPPING
    await sim.stop(machine.ref)  # idempotent while on its way
    assert await state_after(1.9) == MachineState.STOPPING
    assert await state_after(0.1) == MachineState.STOPPED
    with pytest.raises(ProviderError):
        await sim.reboot(machine.ref)
    await sim.start(machine.ref)
    assert await state_after(2.9) == MachineState.STARTING
    assert await state_after(0.1) == MachineState.RUNNING
    await sim.reboot(machine.ref)
    assert await state_after(3.9) == MachineState.REBOOTING
    assert await state_after(0.1) == MachineState.RUNNING


async def test_a_snapshot_and_injected_latency_take_their_time_on_the_clock(db) -> None:
    clock = ManualClock(START)
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=1), clock=clock)
    machine = await sim.create(request())

    taking = asyncio.create_task(sim.snapshot(machine.ref, "snap-token"))
    await clock.until_sleeping()
    clock.advance(1.9)
    await asyncio.sleep(0)
    assert not taking.done()
    clock.advance(0.1)
    snap = await taking
    assert (await sim.snapshot(machine.ref, "snap-token")) == snap  # made already: no second wait
    assert clock.sleepers == 0

    slow = SimulatorProvider(db, SimulatorConfig(time_scale=1, latency_ms=1000), clock=clock)
    reading = asyncio.create_task(slow.get(machine.ref))
    await clock.until_sleeping()
    clock.advance(0.49)  # each call waits 0.5 to 1.5 s
    await asyncio.sleep(0)
    assert not reading.done()
    clock.advance(1.01)
    assert (await reading).ref == machine.ref


async def test_restore_rolls_the_disk_back_and_delete_takes_snapshots_along(db) -> None:
    clock = ManualClock(START)
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=1), clock=clock)
    machine = await sim.create(request())
    clock.advance(6)
    taking = asyncio.create_task(sim.snapshot(machine.ref, "snap-token"))
    await clock.until_sleeping()
    clock.advance(2)
    snap = await taking
    with pytest.raises(ProviderError, match="running"):
        await sim.restore(machine.ref, snap.ref)
    await sim.stop(machine.ref)
    clock.advance(2)
    await sim.restore(machine.ref, snap.ref)
    assert (await sim.get(machine.ref)).state == MachineState.RESTORING
    await sim.restore(machine.ref, snap.ref)  # idempotent while restoring
    clock.advance(3)
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


async def test_metrics_are_plausible_and_follow_the_clock(db) -> None:
    clock = ManualClock(START)
    sim = SimulatorProvider(db, SimulatorConfig(time_scale=1), clock=clock)
    machine = await sim.create(request())
    clock.advance(6)
    await sim.get(machine.ref)
    metrics = await sim.metrics(machine.ref)
    assert 0 < metrics.cpu_percent <= 100 and 0 < metrics.memory_used_mb <= 1024
    assert metrics.disk_read_bytes == 6 * 2048 and metrics.net_rx_bytes == 6 * 4096
    clock.advance(54)
    later = await sim.metrics(machine.ref)
    assert later.disk_read_bytes == 60 * 2048 and later.net_tx_bytes == 60 * 1536
    assert later.cpu_percent == (await sim.metrics(machine.ref)).cpu_percent  # the same within one minute
