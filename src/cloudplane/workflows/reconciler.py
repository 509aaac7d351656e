"""The reconciler: each provider's machines against the servers the database says it holds.

When a machine is removed, stopped or started behind Cloudplane's back (virsh, lxc-stop, a host reboot), its server
follows: the status becomes the machine's, or "error" with the reason when the machine is gone or failed. A server
an operation holds is never touched, nor one an administrator suspended (its machine is frozen on purpose, and its
status keeps the power state it returns to), and each change is one conditional UPDATE that also checks nothing changed the
server since it was read, so several API processes can reconcile at once. Machines no server owns are reported,
never destroyed: whether one is garbage is an operator's call.

A pass walks the fleet in batches, so its memory does not grow with the fleet: the servers in keyset batches by id,
each batch's machines asked of the provider at once (`get_many`), then the provider's inventory page by page
(`list_pages`) against the servers that own it. Its database work runs in threads, never on the event loop that
serves requests. What each pass cost is in /metrics (`cloudplane_reconciler_*`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import CursorResult, Row, exists, select, update

from cloudplane.core import Core
from cloudplane.db.tables import Operation, Server, utcnow
from cloudplane.domain.events import EventType
from cloudplane.domain.states import ServerStatus
from cloudplane.observability import METRICS
from cloudplane.providers.base import Machine, MachineState, Provider
from cloudplane.services import events
from cloudplane.services.operations import UNFINISHED

log = logging.getLogger(__name__)

# The status a settled server takes when its machine is found in this state. A machine on its way somewhere
# (starting, stopping ...) is looked at again on the next pass.
FOLLOWS = {
    MachineState.RUNNING: ServerStatus.RUNNING,
    MachineState.STOPPED: ServerStatus.STOPPED,
    MachineState.ERROR: ServerStatus.ERROR,
}
SETTLED = (ServerStatus.RUNNING, ServerStatus.STOPPED)
GONE = "Its machine was removed at the provider ({provider}) outside Cloudplane; delete this server to clear it."
FAILED = "Its machine went into an error state at the provider ({provider}) outside Cloudplane."
# Servers read (and machines asked for) at a time, and machines per page of a provider's inventory.
BATCH = 500
# A report keeps this many repairs and orphans (it counts them all): drift is the exception, but a provider that
# lost its whole inventory must not make a pass hold a fleet's worth of them.
DETAIL_LIMIT = 1000


@dataclass(frozen=True)
class Repair:
    """A server brought in line with its machine."""

    server_id: int
    provider: str
    ref: str
    was: str
    now: str


@dataclass(frozen=True)
class Orphan:
    """A machine the provider holds that no server owns."""

    provider: str
    ref: str
    hostname: str
    state: str


@dataclass
class Report:
    checked: int = 0  # settled servers compared with their machines
    # The first DETAIL_LIMIT repairs and orphans of the pass, and how many there were in all.
    repairs: list[Repair] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    repaired: int = 0
    orphaned: int = 0
    # Providers whose machines could not be read, with why; their servers not yet compared were left as they were.
    failures: dict[str, str] = field(default_factory=dict)

    def add_repair(self, repair: Repair) -> None:
        self.repaired += 1
        if len(self.repairs) < DETAIL_LIMIT:
            self.repairs.append(repair)

    def add_orphan(self, orphan: Orphan) -> None:
        self.orphaned += 1
        if len(self.orphans) < DETAIL_LIMIT:
            self.orphans.append(orphan)


class ReconcilerMetrics:
    """What the passes cost and found, in /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pass_duration = Histogram(
            "cloudplane_reconciler_pass_duration_seconds",
            "Time a reconciler pass took, over every provider.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf")),
            registry=registry,
        )
        self.last_pass_duration = Gauge(
            "cloudplane_reconciler_last_pass_duration_seconds",
            "Time the last reconciler pass took.",
            registry=registry,
        )
        self.checked = Counter(
            "cloudplane_reconciler_servers_checked_total",
            "Settled servers the reconciler compared with their machines, by provider.",
            ("provider",),
            registry=registry,
        )
        self.repairs = Counter(
            "cloudplane_reconciler_repairs_total",
            "Servers the reconciler brought in line with their machines, by provider and the status they took.",
            ("provider", "status"),
            registry=registry,
        )
        self.orphans = Gauge(
            "cloudplane_reconciler_orphans",
            "Machines no server owns, as the last complete walk of the provider's inventory found them.",
            ("provider",),
            registry=registry,
        )
        self.failures = Counter(
            "cloudplane_reconciler_provider_failures_total",
            "Passes in which a provider's machines could not be read, by provider.",
            ("provider",),
            registry=registry,
        )


RECONCILER_METRICS = ReconcilerMetrics(METRICS.registry)

# An operation that has not finished holds its server, whether or not it set a task state (deleting a snapshot
# does not).
_BUSY = exists().where(Operation.server_id == Server.id, Operation.status.in_(UNFINISHED))


def providers_in_use(core: Core) -> list[str]:
    """Providers some location runs on, or some live server was made on."""
    with core.db.read() as s:
        on_servers = set(s.scalars(select(Server.provider).where(Server.deleted_at.is_(None)).distinct()))
    return sorted(on_servers | {loc.provider for loc in core.catalog.view().locations})


def settled_servers(core: Core, after: int, limit: int) -> list[Row[Any]]:
    """The next `limit` live servers with an id above `after`, in id order, that are running or stopped on a machine,
    not suspended, with no operation holding them. No provider in the query: the walk follows the primary key whatever the mix."""
    with core.db.read() as s:
        return list(
            s.execute(
                select(
                    Server.id, Server.account_id, Server.status, Server.provider, Server.provider_ref, Server.updated_at
                )
                .where(
                    Server.id > after,
                    Server.deleted_at.is_(None),
                    Server.status.in_(SETTLED),
                    Server.task_state.is_(None),
                    Server.suspended_at.is_(None),
                    Server.provider_ref.is_not(None),
                    ~_BUSY,
                )
                .order_by(Server.id)
                .limit(limit)
            )
        )


def owned(core: Core, provider: str, machines: Sequence[Machine]) -> tuple[set[str], set[str]]:
    """Of these machines of the provider: the refs live servers hold, and the tokens of creates still running (their
    ref may not be recorded yet)."""
    refs = [m.ref for m in machines]
    tokens = [m.token for m in machines if m.token is not None]
    with core.db.read() as s:
        held = s.scalars(
            select(Server.provider_ref).where(
                Server.provider == provider, Server.provider_ref.in_(refs), Server.deleted_at.is_(None)
            )
        )
        making = s.scalars(
            select(Operation.id)
            .join(Server, Server.id == Operation.server_id)
            .where(
                Operation.id.in_(tokens),
                Server.provider == provider,
                Operation.kind.in_(("create", "rent")),
                Operation.status.in_(UNFINISHED),
            )
        )
        return {ref for ref in held if ref is not None}, set(making)


def apply(core: Core, server: Row[Any], values: dict[str, Any]) -> bool:
    """Change the server only if it is still as it was read (updated_at moves with every change, claims included),
    settled, not suspended, and held by no operation."""
    with core.db.write() as s:
        result = s.execute(
            update(Server)
            .where(
                Server.id == server.id,
                Server.status == server.status,
                Server.provider_ref == server.provider_ref,
                Server.updated_at == server.updated_at,
                Server.task_state.is_(None),
                Server.suspended_at.is_(None),
                Server.deleted_at.is_(None),
                ~_BUSY,
            )
            .values(updated_at=utcnow(), **values)
        )
        changed = cast(CursorResult[Any], result).rowcount == 1
        if changed:
            events.record(
                s,
                EventType.VPS_DRIFTED,
                account_id=server.account_id,
                target_type="server",
                target_id=server.id,
                data={"server_id": server.id, "from": server.status, "to": str(values["status"])},
            )
    return cast(CursorResult[Any], result).rowcount == 1


async def follow(core: Core, name: str, provider: Provider, server: Row[Any], machine: Machine | None) -> Repair | None:
    """Bring one settled server in line with its machine (None: missing from the provider's list)."""
    if machine is None:
        machine = await provider.get(server.provider_ref)  # a second look before calling it gone
    if machine is None or machine.state == MachineState.DELETED:
        # The ref is dropped with the machine: a provider may hand it to a new machine, which deleting this server
        # must never touch.
        values: dict[str, Any] = {
            "status": ServerStatus.ERROR,
            "provider_ref": None,
            "ipv4": None,
            "private_ipv4": None,
            "error_message": GONE.format(provider=name),
        }
    else:
        status = FOLLOWS.get(machine.state)
        if status is None or status == server.status:
            return None
        values = {"status": status}
        if status == ServerStatus.ERROR:
            values["error_message"] = FAILED.format(provider=name)
    if not await asyncio.to_thread(apply, core, server, values):
        return None  # an operation or another process got there first
    return Repair(server.id, name, server.provider_ref, server.status, values["status"])


def _failed(report: Report, name: str, error: Exception) -> None:
    report.failures[name] = getattr(error, "message", None) or str(error) or type(error).__name__
    RECONCILER_METRICS.failures.labels(name).inc()
    log.warning("reconciler: cannot read the machines of %s: %s", name, report.failures[name])


async def check_servers(core: Core, report: Report) -> None:
    """Every settled server against its machine, a batch at a time, each provider asked for the machines of its
    servers in the batch. A batch's servers are read before their machines are asked for: a machine made after the
    asking must not make its new server look gone. A provider that cannot answer is asked nothing more this pass."""
    after = 0
    while True:
        servers = await asyncio.to_thread(settled_servers, core, after, BATCH)
        by_provider: dict[str, list[Row[Any]]] = {}
        for server in servers:
            by_provider.setdefault(server.provider, []).append(server)
        for name, batch in by_provider.items():
            if name not in report.failures:
                await check_batch(core, name, batch, report)
        if len(servers) < BATCH:
            return
        after = servers[-1].id


async def check_batch(core: Core, name: str, servers: list[Row[Any]], report: Report) -> None:
    try:
        provider = core.providers.get(name)
        machines = {m.ref: m for m in await provider.get_many([server.provider_ref for server in servers])}
    except Exception as error:  # noqa: BLE001 - one provider failing must not stop the others' pass
        _failed(report, name, error)
        return
    report.checked += len(servers)
    RECONCILER_METRICS.checked.labels(name).inc(len(servers))
    for server in servers:
        try:
            repair = await follow(core, name, provider, server, machines.get(server.provider_ref))
        except Exception:  # noqa: BLE001 - the next pass looks again
            log.warning("reconciler: cannot check server %s on %s", server.id, name, exc_info=True)
            continue
        if repair is not None:
            report.add_repair(repair)
            RECONCILER_METRICS.repairs.labels(name, repair.now).inc()
            log.warning(
                "reconciler: server %s (%s %s) was %s, its machine says %s",
                repair.server_id,
                name,
                repair.ref,
                repair.was,
                repair.now,
            )


async def find_orphans(core: Core, name: str, provider: Provider, report: Report) -> None:
    """The provider's machines no server owns, a page of its inventory at a time. Each page is listed before its
    owners are read: a create that records its machine meanwhile is seen as the owner."""
    found = 0
    async for page in provider.list_pages(BATCH):
        refs, tokens = await asyncio.to_thread(owned, core, name, page)
        for machine in page:
            if machine.ref not in refs and machine.token not in tokens:
                found += 1
                report.add_orphan(Orphan(name, machine.ref, machine.hostname, machine.state))
    RECONCILER_METRICS.orphans.labels(name).set(found)


async def reconcile_once(core: Core) -> Report:
    """One pass: every settled server against its machine, then each provider's machines against the servers that
    own them. A provider failing leaves its servers as they are; the others' pass goes on."""
    started = time.perf_counter()
    report = Report()
    names = await asyncio.to_thread(providers_in_use, core)
    await check_servers(core, report)
    for name in names:
        if name in report.failures:
            continue
        try:
            await find_orphans(core, name, core.providers.get(name), report)
        except Exception as error:  # noqa: BLE001 - one provider failing must not stop the others' pass
            _failed(report, name, error)
    elapsed = time.perf_counter() - started
    RECONCILER_METRICS.pass_duration.observe(elapsed)
    RECONCILER_METRICS.last_pass_duration.set(elapsed)
    return report


async def reconcile_periodically(core: Core, interval_s: float) -> None:
    """A pass every `interval_s` seconds, give or take a tenth so that API processes spread out, until cancelled,
    each followed by a catalog refresh. A failed pass is logged and the next runs on time; an orphan is logged when
    first seen."""
    reported: set[tuple[str, str]] = set()
    while True:
        await asyncio.sleep(interval_s * random.uniform(0.9, 1.1))
        try:
            report = await reconcile_once(core)
            # What the providers can make changes too (images added to a host): offer it from now on.
            await asyncio.to_thread(core.catalog.refresh)
        except Exception:  # noqa: BLE001 - the loop must outlive a bad pass
            log.exception("reconciler pass failed")
            continue
        for orphan in report.orphans:
            if (orphan.provider, orphan.ref) not in reported:
                log.warning(
                    "reconciler: %s holds machine %s (%s, %s) that no server owns; left as it is",
                    orphan.provider,
                    orphan.ref,
                    orphan.hostname,
                    orphan.state,
                )
        if report.orphaned > len(report.orphans):
            log.warning(
                "reconciler: %s more machines no server owns (%s in all); left as they are",
                report.orphaned - len(report.orphans),
                report.orphaned,
            )
        reported = {(o.provider, o.ref) for o in report.orphans}


def start_reconciler(core: Core) -> asyncio.Task[None] | None:
    """Run the reconciler as a task of this process's event loop (its database work goes to threads), unless
    CLOUDPLANE_RECONCILE_INTERVAL_S is 0."""
    interval = core.settings.reconcile_interval_s
    if not interval:
        return None
    return asyncio.create_task(reconcile_periodically(core, interval), name="cloudplane-reconciler")
