"""The driver contract of `providers.base.Provider`, checked the same way on every provider this machine can run.

A capability a provider declares unsupported is not skipped: the test asserts the call is refused cleanly,
with NotFound or a non-retryable ProviderError. Calls on an id the provider never issued raise NotFound, except
get (None), delete and delete_snapshot (already gone: success).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers.base import CreateRequest, Machine, MachineState, Metrics

from .conftest import TEST_HOST, Harness

_tokens = itertools.count()


def request_for(name: str = "web", image: str = "debian-12") -> CreateRequest:
    return CreateRequest(
        token=f"contract-{next(_tokens)}-{time.monotonic_ns()}",
        name=name,
        hostname=f"{name}.contract.test",
        cpu=2,
        ram_mb=1024,
        disk_gb=20,
        image=image,
        location="lab",
        ssh_public_keys=("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIContractSuiteKey contract@test",),
    )


async def wait_for(harness: Harness, ref: str, state: MachineState, timeout_s: float = 5.0) -> Machine:
    deadline = time.monotonic() + timeout_s
    while True:
        machine = await harness.provider.get(ref)
        assert machine is not None, f"{ref} vanished while waiting for {state}"
        if machine.state == state or time.monotonic() > deadline:
            assert machine.state == state, f"{ref} is {machine.state}, expected {state}"
            return machine
        await asyncio.sleep(0.02)


async def assert_refused(call: Awaitable[Any]) -> None:
    """A clean refusal: NotFound, or a ProviderError that says retrying will not help."""
    try:
        await call
    except NotFound:
        return
    except ProviderError as error:
        assert not error.retryable, f"refused with a retryable error: {error}"
        return
    pytest.fail("the call succeeded, but it should have been refused")


async def declared_unsupported(harness: Harness, operation: str, call: Callable[[], Awaitable[Any]]) -> bool:
    """If the provider declares `operation` unsupported, check that it is refused cleanly and say so."""
    if harness.provider.capabilities.supports(operation):
        return False
    await assert_refused(call())
    return True


async def running_machine(harness: Harness, name: str = "web") -> Machine:
    machine = await harness.provider.create(request_for(name, harness.image))
    return await wait_for(harness, machine.ref, MachineState.RUNNING)


async def test_declared_capabilities_have_reasons_and_are_refused(harness: Harness) -> None:
    machine = await running_machine(harness)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "start": lambda: harness.provider.start(machine.ref),
        "stop": lambda: harness.provider.stop(machine.ref),
        "reboot": lambda: harness.provider.reboot(machine.ref),
        "snapshot": lambda: harness.provider.snapshot(machine.ref, "capability-check"),
        "metrics": lambda: harness.provider.metrics(machine.ref),
    }
    for operation, reason in harness.provider.capabilities.unsupported.items():
        assert reason.strip(), f"{operation} is declared unsupported without a reason"
        if operation in calls:
            await assert_refused(calls[operation]())


async def test_create_reaches_running_and_shows_in_get_and_list(harness: Harness) -> None:
    request = request_for("alpha", harness.image)
    created = await harness.provider.create(request)
    assert created.token == request.token
    assert created.state in (MachineState.PROVISIONING, MachineState.RUNNING)
    machine = await wait_for(harness, created.ref, MachineState.RUNNING)
    assert machine.hostname == request.hostname
    listed = {m.ref: m for m in await harness.provider.list()}
    assert listed[created.ref].state == MachineState.RUNNING
    assert listed[created.ref].token == request.token


async def test_create_is_idempotent_on_the_token(harness: Harness) -> None:
    request = request_for(image=harness.image)
    first = await harness.provider.create(request)
    second = await harness.provider.create(request)
    assert second.ref == first.ref
    assert [m.ref for m in await harness.provider.list() if m.token == request.token] == [first.ref]
    found = await harness.provider.find_by_token(request.token)
    assert found is not None and found.ref == first.ref
    assert await harness.provider.find_by_token("never-used-token") is None


async def test_list_holds_only_cloudplane_machines(harness: Harness) -> None:
    # The libvirt test host carries two domains of its own; they must not show up.
    assert await harness.provider.list() == []
    machine = await running_machine(harness)
    assert [m.ref for m in await harness.provider.list()] == [machine.ref]


async def test_stop_start_reboot(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await declared_unsupported(harness, "stop", lambda: harness.provider.stop(machine.ref)):
        return
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    await harness.provider.stop(machine.ref)  # idempotent
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    await assert_refused(harness.provider.reboot(machine.ref))  # only a running machine reboots
    await harness.provider.start(machine.ref)
    await wait_for(harness, machine.ref, MachineState.RUNNING)
    await harness.provider.start(machine.ref)  # idempotent
    await wait_for(harness, machine.ref, MachineState.RUNNING)
    if await declared_unsupported(harness, "reboot", lambda: harness.provider.reboot(machine.ref)):
        return
    await harness.provider.reboot(machine.ref)
    await wait_for(harness, machine.ref, MachineState.RUNNING)


async def test_snapshot_restore_and_delete_snapshot(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await declared_unsupported(harness, "snapshot", lambda: harness.provider.snapshot(machine.ref, "snap-1")):
        return
    snapshot = await harness.provider.snapshot(machine.ref, "snap-1")
    assert snapshot.machine_ref == machine.ref and snapshot.size_gb >= 0
    assert (await harness.provider.snapshot(machine.ref, "snap-1")).ref == snapshot.ref  # idempotent on the token
    assert (await harness.provider.snapshot(machine.ref, "snap-2")).ref != snapshot.ref

    await assert_refused(harness.provider.restore(machine.ref, snapshot.ref))  # the machine must be stopped
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    if not await declared_unsupported(harness, "restore", lambda: harness.provider.restore(machine.ref, snapshot.ref)):
        await harness.provider.restore(machine.ref, snapshot.ref)
        await wait_for(harness, machine.ref, MachineState.STOPPED)  # the machine stays stopped

    await harness.provider.delete_snapshot(snapshot.ref)
    await harness.provider.delete_snapshot(snapshot.ref)  # idempotent
    await assert_refused(harness.provider.restore(machine.ref, snapshot.ref))


async def test_restore_refuses_another_machines_snapshot(harness: Harness) -> None:
    first = await running_machine(harness, "first")
    second = await running_machine(harness, "second")
    if await declared_unsupported(harness, "snapshot", lambda: harness.provider.snapshot(first.ref, "s")):
        return
    snapshot = await harness.provider.snapshot(first.ref, "s")
    await harness.provider.stop(second.ref)
    await wait_for(harness, second.ref, MachineState.STOPPED)
    await assert_refused(harness.provider.restore(second.ref, snapshot.ref))


async def test_metrics(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await declared_unsupported(harness, "metrics", lambda: harness.provider.metrics(machine.ref)):
        return
    for _ in range(2):  # the second read has a previous sample to compute rates from
        metrics = await harness.provider.metrics(machine.ref)
        assert isinstance(metrics, Metrics)
        assert 0.0 <= metrics.cpu_percent <= 100.0
        assert (
            min(
                metrics.memory_used_mb,
                metrics.disk_read_bytes,
                metrics.disk_write_bytes,
                metrics.net_rx_bytes,
                metrics.net_tx_bytes,
            )
            >= 0
        )
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    stopped = await harness.provider.metrics(machine.ref)
    assert stopped.cpu_percent == 0.0 and stopped.memory_used_mb == 0


async def test_delete_removes_the_machine_and_its_snapshots_and_is_idempotent(harness: Harness) -> None:
    machine = await running_machine(harness)
    snapshot = None
    if harness.provider.capabilities.supports("snapshot"):
        snapshot = await harness.provider.snapshot(machine.ref, "before-delete")
    await harness.provider.delete(machine.ref)
    assert await harness.provider.get(machine.ref) is None
    assert machine.ref not in {m.ref for m in await harness.provider.list()}
    assert await harness.provider.find_by_token(machine.token or "") is None
    await harness.provider.delete(machine.ref)  # idempotent
    if snapshot is not None:
        await harness.provider.delete_snapshot(snapshot.ref)  # its snapshot went with it: already gone


async def test_unknown_ids(harness: Harness) -> None:
    provider, ref = harness.provider, harness.unknown_ref
    assert await provider.get(ref) is None
    for call in (
        provider.start(ref),
        provider.stop(ref),
        provider.reboot(ref),
        provider.metrics(ref),
        provider.snapshot(ref, "unknown"),
        provider.restore(ref, harness.unknown_snapshot_ref),
    ):
        with pytest.raises(NotFound):
            await call
    await provider.delete(ref)
    await provider.delete_snapshot(harness.unknown_snapshot_ref)


async def test_a_create_failing_half_way_leaves_nothing_behind(harness: Harness) -> None:
    request = request_for("half-way", harness.image)
    with harness.failing_create(), pytest.raises(ProviderError):
        await harness.provider.create(request)
    leftover = await harness.provider.find_by_token(request.token)
    if harness.failed_create_leaves_nothing:
        assert leftover is None
        assert request.token not in {m.token for m in await harness.provider.list()}
    # Either way the caller's retry ends with exactly one machine for the token, never two.
    machine = await harness.provider.create(request)
    assert leftover is None or machine.ref == leftover.ref
    await wait_for(harness, machine.ref, MachineState.RUNNING)
    assert [m.ref for m in await harness.provider.list() if m.token == request.token] == [machine.ref]
    await harness.provider.delete(machine.ref)
    assert await harness.provider.find_by_token(request.token) is None


def libvirt_provider(**options: Any) -> Any:
    from cloudplane.providers.libvirt import LibvirtProvider

    return LibvirtProvider(f"test://{TEST_HOST}", **options)


async def test_libvirt_never_touches_domains_it_did_not_make() -> None:
    provider = libvirt_provider()
    try:
        foreign = provider._connection().lookupByName("foreign-running")
        assert await provider.get(foreign.UUIDString()) is None
        await provider.delete(foreign.UUIDString())
        with pytest.raises(NotFound):
            await provider.stop(foreign.UUIDString())
        assert foreign.isActive()
    finally:
        provider.close()


async def test_libvirt_stop_pulls_the_plug_when_the_guest_ignores_acpi(monkeypatch: pytest.MonkeyPatch) -> None:
    import libvirt

    provider = libvirt_provider(stop_timeout_s=0.0)
    try:
        machine = await provider.create(request_for())
        monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda self, *args: 0)  # a guest deaf to ACPI
        await provider.stop(machine.ref)
        assert (await provider.get(machine.ref)).state == MachineState.STOPPED  # type: ignore[union-attr]
    finally:
        provider.close()
