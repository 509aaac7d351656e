"""The driver contract of `providers.base.Provider`, checked the same way on every provider this machine can run.

Every driver declares every `Feature`. A feature a driver refuses is not skipped: the test asserts the refusal,
through `require_feature` and through the driver's own call, with the declared reason. Calls on an id the
provider never issued raise NotFound, except get (None), delete and delete_snapshot (already gone: success).
The marketplace-backed compute runs the same suite on instances rented through the simulated marketplace.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cloudplane.db.engine import Database
from cloudplane.domain.errors import InvalidState, NotFound, ProviderError
from cloudplane.domain.states import ACTIONS
from cloudplane.providers.base import (
    ACTION_FEATURES,
    CreateRequest,
    Feature,
    FirewallRule,
    Machine,
    MachineState,
    Metrics,
    RebuildRequest,
    check_declared,
    require_feature,
)
from cloudplane.providers.marketplace import MarketFeature
from cloudplane.providers.simmarket import SimulatedMarketplace
from cloudplane.providers.terminal import Terminal
from cloudplane.providers.vastai import VastAIProvider

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


async def refused_as_declared(
    harness: Harness, feature: Feature, call: Callable[[], Awaitable[Any]] | None = None
) -> bool:
    """If the driver refuses `feature`, check the refusal and say so: `require_feature` names the driver's reason,
    and the driver's own call (if the interface has one) raises a non-retryable ProviderError with that reason,
    whatever the ref (the refusal comes before any lookup)."""
    support = harness.provider.features[feature]
    if support.supported:
        return False
    assert support.reason and support.reason.strip(), f"{feature} is refused without a reason"
    with pytest.raises(InvalidState) as refusal:
        require_feature(harness.provider, feature, subject=f"{harness.provider.name} servers")
    assert refusal.value.message == f"{harness.provider.name} servers cannot {feature.phrase}: {support.reason}"
    if call is not None:
        with pytest.raises(ProviderError) as error:
            await call()
        assert not error.value.retryable, f"{feature} refused with a retryable error: {error.value}"
        assert error.value.message == support.reason
    return True


async def running_machine(harness: Harness, name: str = "web") -> Machine:
    machine = await harness.create(request_for(name, harness.image))
    return await wait_for(harness, machine.ref, MachineState.RUNNING)


# Features declared ahead of their calls: a driver cannot support what the interface cannot yet ask of it.
PLANNED = {Feature.RESIZE}
# SHA-512 crypt of "contract-password", as services/passwords.py makes them.
NEW_PASSWORD_HASH = (
    "$6$contractsalt1234$96emHomdna8GZxDGG13V1D.lr9Qx6J6Q11WOp/UZbJsydZgVrPmoiXmQLIqd6YTLrrGeauJZjRbU1CVMz8m7u/"
)
NEW_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRebuiltMachineKey rebuilt@test"


def rebuild_request_for(image: str, token: str = "rebuild-1") -> RebuildRequest:
    return RebuildRequest(
        token=f"{token}-{time.monotonic_ns()}",
        image=image,
        ssh_public_keys=(NEW_KEY,),
        root_password_hash="$6$rounds=1000$contractsalt$0123456789abcdef",
    )


def test_every_feature_is_declared(harness: Harness) -> None:
    check_declared(harness.provider, Feature)
    assert list(harness.provider.features) == list(Feature)
    for feature, reason in harness.provider.features.refusals().items():
        assert reason.strip(), f"{feature} is refused without a reason"
    assert PLANNED <= set(harness.provider.features.refusals())
    # The features the server state machine's actions need are the ones checked before a claim.
    assert set(ACTION_FEATURES) == set(ACTIONS)


async def test_refused_features_are_refused_with_their_reason(harness: Harness) -> None:
    machine = await running_machine(harness)
    provider = harness.provider
    calls: dict[Feature, Callable[[], Awaitable[Any]]] = {
        Feature.CREATE: lambda: provider.create(request_for("refused", harness.image)),
        Feature.START: lambda: provider.start(machine.ref),
        Feature.STOP: lambda: provider.stop(machine.ref),
        Feature.REBOOT: lambda: provider.reboot(machine.ref),
        Feature.DELETE: lambda: provider.delete(machine.ref),
        Feature.SNAPSHOT: lambda: provider.snapshot(machine.ref, "feature-check"),
        Feature.RESTORE: lambda: provider.restore(machine.ref, harness.unknown_snapshot_ref),
        Feature.DELETE_SNAPSHOT: lambda: provider.delete_snapshot(harness.unknown_snapshot_ref),
        Feature.METRICS: lambda: provider.metrics(machine.ref),
        Feature.SUSPEND: lambda: provider.suspend(machine.ref),
        Feature.RESUME: lambda: provider.resume(machine.ref),
        Feature.REBUILD: lambda: provider.rebuild(machine.ref, rebuild_request_for(harness.image)),
        Feature.CONSOLE: lambda: provider.console(machine.ref),
        Feature.FIREWALL: lambda: provider.set_firewall(machine.ref, [FirewallRule("accept", "tcp")]),
        Feature.EXTRA_IPS: lambda: provider.add_address(machine.ref, "198.51.100.7"),
        Feature.RESET_PASSWORD: lambda: provider.set_root_password(machine.ref, NEW_PASSWORD_HASH),
    }
    assert set(calls) | PLANNED == set(Feature)
    refused = [f for f in Feature if await refused_as_declared(harness, f, calls.get(f))]
    assert set(refused) >= PLANNED
    for feature in set(Feature) - set(refused):
        require_feature(provider, feature, subject="these servers")  # supported: no error


async def test_the_console_answers_what_is_typed(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await refused_as_declared(harness, Feature.CONSOLE, lambda: harness.provider.console(machine.ref)):
        return
    await converse(await harness.provider.console(machine.ref), b"echo console-check\r", b"\nconsole-check\n")


async def converse(terminal: Terminal, typed: bytes, answer: bytes, timeout_s: float = 15) -> bytes:
    """Wait for the shell's prompt (what is typed before it may be lost), type, wait for the answer (on a line of its
    own), then close the terminal, which then reads as ended; what the terminal showed."""
    seen = b""

    async def until(shown: bytes) -> None:
        nonlocal seen
        while shown not in seen.replace(b"\r", b""):
            data = await terminal.read()
            assert data, f"the console closed: {seen!r}"
            seen += data

    try:
        await asyncio.wait_for(until(b"# "), timeout_s)
        await terminal.write(typed)
        await asyncio.wait_for(until(answer), timeout_s)
    except TimeoutError:
        raise AssertionError(f"no answer from the console: {seen!r}") from None
    finally:
        await terminal.close()
    assert await terminal.read() == b""
    return seen


async def test_create_reaches_running_and_shows_in_get_and_list(harness: Harness) -> None:
    request = request_for("alpha", harness.image)
    created = await harness.create(request)
    assert created.token == request.token
    assert created.state in (MachineState.PROVISIONING, MachineState.RUNNING)
    machine = await wait_for(harness, created.ref, MachineState.RUNNING)
    assert machine.hostname == request.hostname
    listed = {m.ref: m for m in await harness.provider.list()}
    assert listed[created.ref].state == MachineState.RUNNING
    assert listed[created.ref].token == request.token


async def test_create_is_idempotent_on_the_token(harness: Harness) -> None:
    request = request_for(image=harness.image)
    first = await harness.create(request)
    second = await harness.create(request)
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


async def test_list_pages_hold_each_machine_once_and_no_more_than_asked(harness: Harness) -> None:
    assert [page async for page in harness.provider.list_pages(2)] == []
    made = [await running_machine(harness, name) for name in ("one", "two", "three")]
    pages = [page async for page in harness.provider.list_pages(2)]
    assert [len(page) for page in pages] == [2, 1]
    paged = [m for page in pages for m in page]
    assert sorted(m.ref for m in paged) == sorted(m.ref for m in made)
    assert sorted(paged, key=lambda m: m.ref) == sorted(await harness.provider.list(), key=lambda m: m.ref)
    assert [len(page) for page in [page async for page in harness.provider.list_pages(3)]] == [3]


async def test_get_many_answers_what_get_does_and_leaves_unknown_refs_out(harness: Harness) -> None:
    assert await harness.provider.get_many([]) == []
    assert await harness.provider.get_many([harness.unknown_ref, "not a ref at all", "٣"]) == []
    first, second = await running_machine(harness, "first"), await running_machine(harness, "second")
    found = await harness.provider.get_many([second.ref, harness.unknown_ref, first.ref, second.ref])
    assert sorted(found, key=lambda m: m.ref) == sorted(
        [await harness.provider.get(first.ref), await harness.provider.get(second.ref)], key=lambda m: m.ref
    )
    await harness.provider.delete(first.ref)
    assert await harness.provider.get(first.ref) is None
    assert [m.ref for m in await harness.provider.get_many([first.ref, second.ref])] == [second.ref]


async def test_stop_start_reboot(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await refused_as_declared(harness, Feature.STOP, lambda: harness.provider.stop(machine.ref)):
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
    if await refused_as_declared(harness, Feature.REBOOT, lambda: harness.provider.reboot(machine.ref)):
        return
    await harness.provider.reboot(machine.ref)
    await wait_for(harness, machine.ref, MachineState.RUNNING)


async def test_snapshot_restore_and_delete_snapshot(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await refused_as_declared(harness, Feature.SNAPSHOT, lambda: harness.provider.snapshot(machine.ref, "snap-1")):
        return
    snapshot = await harness.provider.snapshot(machine.ref, "snap-1")
    assert snapshot.machine_ref == machine.ref and snapshot.size_gb >= 0
    assert (await harness.provider.snapshot(machine.ref, "snap-1")).ref == snapshot.ref  # idempotent on the token
    assert (await harness.provider.snapshot(machine.ref, "snap-2")).ref != snapshot.ref

    await assert_refused(harness.provider.restore(machine.ref, snapshot.ref))  # the machine must be stopped
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    if not await refused_as_declared(
        harness, Feature.RESTORE, lambda: harness.provider.restore(machine.ref, snapshot.ref)
    ):
        await harness.provider.restore(machine.ref, snapshot.ref)
        await wait_for(harness, machine.ref, MachineState.STOPPED)  # the machine stays stopped

    await harness.provider.delete_snapshot(snapshot.ref)
    await harness.provider.delete_snapshot(snapshot.ref)  # idempotent
    await assert_refused(harness.provider.restore(machine.ref, snapshot.ref))


async def test_restore_refuses_another_machines_snapshot(harness: Harness) -> None:
    first = await running_machine(harness, "first")
    second = await running_machine(harness, "second")
    if await refused_as_declared(harness, Feature.SNAPSHOT, lambda: harness.provider.snapshot(first.ref, "s")):
        return
    snapshot = await harness.provider.snapshot(first.ref, "s")
    await harness.provider.stop(second.ref)
    await wait_for(harness, second.ref, MachineState.STOPPED)
    await assert_refused(harness.provider.restore(second.ref, snapshot.ref))


async def test_suspend_freezes_a_running_machine_and_resume_thaws_it(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await refused_as_declared(harness, Feature.SUSPEND, lambda: harness.provider.suspend(machine.ref)):
        assert await refused_as_declared(harness, Feature.RESUME, lambda: harness.provider.resume(machine.ref))
        return
    await harness.provider.resume(machine.ref)  # a running machine: nothing to thaw
    await wait_for(harness, machine.ref, MachineState.RUNNING)
    await harness.provider.suspend(machine.ref)
    await wait_for(harness, machine.ref, MachineState.SUSPENDED)
    await harness.provider.suspend(machine.ref)  # idempotent
    await wait_for(harness, machine.ref, MachineState.SUSPENDED)
    assert [m.state for m in await harness.provider.get_many([machine.ref])] == [MachineState.SUSPENDED]
    await harness.provider.resume(machine.ref)
    await wait_for(harness, machine.ref, MachineState.RUNNING)
    await harness.provider.resume(machine.ref)  # idempotent
    await wait_for(harness, machine.ref, MachineState.RUNNING)
    # A stopped machine needs no freezing, and there is nothing frozen in it to thaw.
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    await assert_refused(harness.provider.suspend(machine.ref))
    await assert_refused(harness.provider.resume(machine.ref))
    await wait_for(harness, machine.ref, MachineState.STOPPED)


async def test_rebuild_reimages_a_stopped_machine_keeping_it_and_its_snapshots(harness: Harness) -> None:
    machine = await running_machine(harness)
    request = rebuild_request_for(harness.image)
    if await refused_as_declared(harness, Feature.REBUILD, lambda: harness.provider.rebuild(machine.ref, request)):
        return
    await assert_refused(harness.provider.rebuild(machine.ref, request))  # the machine must be stopped
    snapshot = await harness.provider.snapshot(machine.ref, "before-rebuild")
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)

    await harness.provider.rebuild(machine.ref, request)
    rebuilt = await wait_for(harness, machine.ref, MachineState.STOPPED)  # the machine stays stopped
    assert (rebuilt.ref, rebuilt.hostname, rebuilt.token) == (machine.ref, machine.hostname, machine.token)
    await harness.provider.rebuild(machine.ref, request)  # a retry, as after a lost reply: harmless
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    assert [m.ref for m in await harness.provider.list() if m.token == machine.token] == [machine.ref]

    await harness.provider.start(machine.ref)
    running = await wait_for(harness, machine.ref, MachineState.RUNNING)
    assert running.public_ipv4 == machine.public_ipv4  # the same machine, at the same address
    # Its snapshots stay: the one taken before the rebuild still restores.
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    await harness.provider.restore(machine.ref, snapshot.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    await harness.provider.delete(machine.ref)
    assert await harness.provider.get(machine.ref) is None


async def test_reset_password_sets_roots_password_inside_a_running_machine(harness: Harness) -> None:
    machine = await running_machine(harness)
    call = lambda: harness.provider.set_root_password(machine.ref, NEW_PASSWORD_HASH)  # noqa: E731
    if await refused_as_declared(harness, Feature.RESET_PASSWORD, call):
        return
    await call()
    await call()  # idempotent: the same hash again changes nothing
    await wait_for(harness, machine.ref, MachineState.RUNNING)  # it keeps running throughout
    if hasattr(harness.provider, "root_password_hash"):  # the simulator shows what it was given
        assert harness.provider.root_password_hash(machine.ref) == NEW_PASSWORD_HASH
    # Set inside the running system: a stopped machine is refused, and an unknown one is not found.
    await harness.provider.stop(machine.ref)
    await wait_for(harness, machine.ref, MachineState.STOPPED)
    await assert_refused(harness.provider.set_root_password(machine.ref, NEW_PASSWORD_HASH))
    await assert_refused(harness.provider.set_root_password(harness.unknown_ref, NEW_PASSWORD_HASH))


async def test_metrics(harness: Harness) -> None:
    machine = await running_machine(harness)
    if await refused_as_declared(harness, Feature.METRICS, lambda: harness.provider.metrics(machine.ref)):
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
    if harness.provider.features.supports(Feature.SNAPSHOT):
        snapshot = await harness.provider.snapshot(machine.ref, "before-delete")
    await harness.provider.delete(machine.ref)
    assert await harness.provider.get(machine.ref) is None
    assert machine.ref not in {m.ref for m in await harness.provider.list()}
    assert await harness.provider.find_by_token(machine.token or "") is None
    await harness.provider.delete(machine.ref)  # idempotent
    if snapshot is not None:
        await harness.provider.delete_snapshot(snapshot.ref)  # its snapshot went with it: already gone


async def test_firewall_rules_are_replaced_as_a_whole_and_idempotent(harness: Harness) -> None:
    machine = await running_machine(harness)
    rules = [FirewallRule("accept", "tcp", "203.0.113.0/24", 22, 22), FirewallRule("drop", "icmp")]
    if await refused_as_declared(harness, Feature.FIREWALL, lambda: harness.provider.set_firewall(machine.ref, rules)):
        return
    await harness.provider.set_firewall(machine.ref, rules)  # the same again: no error, nothing doubled
    await harness.provider.set_firewall(machine.ref, [FirewallRule("accept", "udp", port_from=53, port_to=53)])
    await harness.provider.set_firewall(machine.ref, [])
    await harness.provider.set_firewall(machine.ref, [])
    await harness.provider.set_firewall(machine.ref, rules)
    await harness.provider.delete(machine.ref)  # a machine with rules is deleted with them
    assert await harness.provider.get(machine.ref) is None


async def test_unknown_ids(harness: Harness) -> None:
    provider, ref = harness.provider, harness.unknown_ref
    assert await provider.get(ref) is None
    calls: dict[Feature, Callable[[], Awaitable[Any]]] = {
        Feature.START: lambda: provider.start(ref),
        Feature.STOP: lambda: provider.stop(ref),
        Feature.REBOOT: lambda: provider.reboot(ref),
        Feature.METRICS: lambda: provider.metrics(ref),
        Feature.SNAPSHOT: lambda: provider.snapshot(ref, "unknown"),
        Feature.RESTORE: lambda: provider.restore(ref, harness.unknown_snapshot_ref),
        Feature.SUSPEND: lambda: provider.suspend(ref),
        Feature.RESUME: lambda: provider.resume(ref),
        Feature.REBUILD: lambda: provider.rebuild(ref, rebuild_request_for(harness.image)),
        Feature.FIREWALL: lambda: provider.set_firewall(ref, [FirewallRule("drop", "tcp")]),
    }
    for feature, call in calls.items():
        if not await refused_as_declared(harness, feature, call):
            with pytest.raises(NotFound):
                await call()
    await provider.delete(ref)
    if not await refused_as_declared(
        harness, Feature.DELETE_SNAPSHOT, lambda: provider.delete_snapshot(harness.unknown_snapshot_ref)
    ):
        await provider.delete_snapshot(harness.unknown_snapshot_ref)


async def test_a_create_failing_half_way_leaves_nothing_behind(harness: Harness) -> None:
    request = request_for("half-way", harness.image)
    if harness.failing_create is None:
        assert await refused_as_declared(harness, Feature.CREATE, lambda: harness.provider.create(request))
        return
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


async def test_every_marketplace_declares_every_feature(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'market.sqlite'}")
    vast = VastAIProvider("contract-suite-key")
    try:
        for market in (SimulatedMarketplace(db, time_scale=0), vast):
            check_declared(market, MarketFeature)
            assert list(market.features) == list(MarketFeature)
            assert all(reason.strip() for reason in market.features.refusals().values())
    finally:
        await vast.aclose()
        db.dispose()
