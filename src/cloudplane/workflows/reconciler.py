"""The reconciler: each provider's machines against the servers the database says it holds.

When a machine is removed, stopped or started behind Cloudplane's back (virsh, lxc-stop, a host reboot), its server
follows: the status becomes the machine's, or "error" with the reason when the machine is gone or failed. A server
an operation holds is never touched, and each change is one conditional UPDATE that also checks nothing changed the
server since it was read, so several API processes can reconcile at once. Machines no server owns are reported,
never destroyed: whether one is garbage is an operator's call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, Row, exists, select, update

from cloudplane.core import Core
from cloudplane.db.tables import Operation, Server, utcnow
from cloudplane.domain.events import EventType
from cloudplane.domain.states import ServerStatus
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
    repairs: list[Repair] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    # Providers whose machines could not be listed, with why; their servers were left as they were.
    failures: dict[str, str] = field(default_factory=dict)


# An operation that has not finished holds its server, whether or not it set a task state (deleting a snapshot
# does not).
_BUSY = exists().where(Operation.server_id == Server.id, Operation.status.in_(UNFINISHED))


def providers_in_use(core: Core) -> list[str]:
    """Providers some location runs on, or some live server was made on."""
    with core.db.read() as s:
        on_servers = set(s.scalars(select(Server.provider).where(Server.deleted_at.is_(None)).distinct()))
    return sorted(on_servers | {loc.provider for loc in core.catalog.view().locations})


def settled_servers(core: Core, provider: str) -> list[Row[Any]]:
    """The provider's live servers that are running or stopped with no operation holding them."""
    with core.db.read() as s:
        return list(
            s.execute(
                select(Server.id, Server.account_id, Server.status, Server.provider_ref, Server.updated_at).where(
                    Server.provider == provider,
                    Server.deleted_at.is_(None),
                    Server.status.in_(SETTLED),
                    Server.task_state.is_(None),
                    Server.provider_ref.is_not(None),
                    ~_BUSY,
                )
            )
        )


def owned(core: Core, provider: str) -> tuple[set[str], set[str]]:
    """The refs of the provider's live servers, and the tokens of creates still running (their ref may not be
    recorded yet)."""
    with core.db.read() as s:
        refs = s.scalars(
            select(Server.provider_ref).where(
                Server.provider == provider, Server.deleted_at.is_(None), Server.provider_ref.is_not(None)
            )
        )
        tokens = s.scalars(
            select(Operation.id)
            .join(Server, Server.id == Operation.server_id)
            .where(
                Server.provider == provider, Operation.kind.in_(("create", "rent")), Operation.status.in_(UNFINISHED)
            )
        )
        return {ref for ref in refs if ref is not None}, set(tokens)


def apply(core: Core, server: Row[Any], values: dict[str, Any]) -> bool:
    """Change the server only if it is still as it was read (updated_at moves with every change, claims included),
    settled, and held by no operation."""
    with core.db.write() as s:
        result = s.execute(
            update(Server)
            .where(
                Server.id == server.id,
                Server.status == server.status,
                Server.provider_ref == server.provider_ref,
                Server.updated_at == server.updated_at,
                Server.task_state.is_(None),
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


async def reconcile_once(core: Core) -> Report:
    """One pass over every provider in use. The servers are read before the machines are listed: a machine made
    after the listing must not make its new server look gone."""
    report = Report()
    for name in await asyncio.to_thread(providers_in_use, core):
        try:
            provider = core.providers.get(name)
            servers = await asyncio.to_thread(settled_servers, core, name)
            machines = {m.ref: m for m in await provider.list()}
        except Exception as error:  # noqa: BLE001 - one provider failing must not stop the others' pass
            report.failures[name] = getattr(error, "message", None) or str(error) or type(error).__name__
            log.warning("reconciler: cannot list the machines of %s: %s", name, report.failures[name])
            continue
        report.checked += len(servers)
        for server in servers:
            try:
                repair = await follow(core, name, provider, server, machines.get(server.provider_ref))
            except Exception:  # noqa: BLE001 - the next pass looks again
                log.warning("reconciler: cannot check server %s on %s", server.id, name, exc_info=True)
                continue
            if repair is not None:
                report.repairs.append(repair)
                log.warning(
                    "reconciler: server %s (%s %s) was %s, its machine says %s",
                    repair.server_id,
                    name,
                    repair.ref,
                    repair.was,
                    repair.now,
                )
        refs, tokens = await asyncio.to_thread(owned, core, name)
        report.orphans += [
            Orphan(name, m.ref, m.hostname, m.state)
            for m in machines.values()
            if m.ref not in refs and m.token not in tokens
        ]
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
        reported = {(o.provider, o.ref) for o in report.orphans}


def start_reconciler(core: Core) -> asyncio.Task[None] | None:
    """Run the reconciler in this process's event loop, unless CLOUDPLANE_RECONCILE_INTERVAL_S is 0."""
    interval = core.settings.reconcile_interval_s
    if not interval:
        return None
    return asyncio.create_task(reconcile_periodically(core, interval), name="cloudplane-reconciler")
