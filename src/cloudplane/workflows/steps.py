"""What every operation's workflow is made of: claiming its operation, typed provider calls, changing rows with
their events in one fenced transaction, waiting on a machine, and the frame that ends every operation in success or
a clear error.

Each provider call retries what the provider says is retryable (calls are idempotent, see providers/base.py).
`CLOUDPLANE_CRASH_AT=<kind>:<step>` (honoured only with `CLOUDPLANE_TEST_HOOKS=1`) kills the process right after
that provider call returned and before its result was recorded, or right after a row change committed (`update_rows`):
the worst moments, which the crash tests use to prove that running the operation again finishes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Row, and_, bindparam, case, delete, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from cloudplane import observability
from cloudplane.core import Core
from cloudplane.db.tables import Deployment, IpAddress, Operation, Server, Snapshot, table_of, utcnow
from cloudplane.domain.errors import CloudplaneError, ProviderError
from cloudplane.domain.states import ServerStatus, SnapshotStatus
from cloudplane.providers.base import (
    CreateRequest,
    FirewallRule,
    Machine,
    MachineState,
    Provider,
    RebuildRequest,
    SnapshotInfo,
    pacing_of,
)
from cloudplane.providers.marketplace import Instance, MarketplaceProvider, RentRequest
from cloudplane.services import operations
from cloudplane.workflows.kinds import workflow_for

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

# The process's Core and the kind of operation a workflow task carries (crash points, metrics); set by `execute`.
_core: ContextVar[Core] = ContextVar("cloudplane_workflow_core")
_kind: ContextVar[str] = ContextVar("cloudplane_operation_kind", default="")

RETRY_ATTEMPTS = 6
RETRY_FIRST_DELAY_S = 0.2


class Abandoned(Exception):
    """This run no longer holds its operation: another process took it over, or it ended elsewhere."""


@dataclass(frozen=True)
class Job:
    """An operation as its workflow reads it when it claims it: the row's facts plus what its server and snapshot
    say."""

    id: str
    kind: str
    account_id: int
    target_type: str
    target_id: str
    server_id: int | None
    snapshot_id: int | None
    actor_user_id: int | None
    request_id: str | None
    client_ip: str | None
    created_at: datetime
    executor_id: str
    # Where an earlier run of it got to (None: nowhere it had to record).
    stage: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    provider_ref: str | None = None
    snapshot_ref: str | None = None


def core() -> Core:
    return _core.get()


def crash_point(step: str) -> None:
    """Die here if the test hooks ask for it (see the module docstring)."""
    settings = core().settings
    if settings.test_hooks and settings.crash_at and settings.crash_at == f"{_kind.get()}:{step}":
        log.warning("CLOUDPLANE_CRASH_AT=%s reached: killing the process", settings.crash_at)
        os.kill(os.getpid(), signal.SIGKILL)


async def db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A blocking database call from a workflow (`Database.run`: inline on SQLite, in a thread on PostgreSQL)."""
    return await core().db.run(fn, *args, **kwargs)


async def _call(provider: str, call: str, fn: Callable[[], Awaitable[T]]) -> T:
    """One provider call with capped, jittered retries of what the provider says may help; the error a user
    sees names the last failure and how often it was tried."""
    delay = RETRY_FIRST_DELAY_S
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            result = await fn()
        except Exception as error:
            observability.provider_call_failed(provider, call)
            if not getattr(error, "retryable", False):
                raise
            if attempt == RETRY_ATTEMPTS:
                message = getattr(error, "message", None) or str(error) or type(error).__name__
                raise ProviderError(f"{message} (gave up after {attempt} attempts)", retryable=False) from error
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay *= 2
            continue
        crash_point(call)
        return result
    raise AssertionError("unreachable")


def compute(provider: str) -> Provider:
    return core().providers.get(provider)


def market(provider: str) -> MarketplaceProvider:
    return core().providers.market(provider)


# Typed provider calls.


async def create_machine(provider: str, request: CreateRequest) -> Machine:
    return await _call(provider, "create", lambda: compute(provider).create(request))


async def get_machine(provider: str, ref: str) -> Machine | None:
    return await _call(provider, "get", lambda: compute(provider).get(ref))


async def find_machine(provider: str, token: str) -> Machine | None:
    return await _call(provider, "find_by_token", lambda: compute(provider).find_by_token(token))


async def start_machine(provider: str, ref: str) -> None:
    await _call(provider, "start", lambda: compute(provider).start(ref))


async def stop_machine(provider: str, ref: str) -> None:
    await _call(provider, "stop", lambda: compute(provider).stop(ref))


async def reboot_machine(provider: str, ref: str) -> None:
    await _call(provider, "reboot", lambda: compute(provider).reboot(ref))


async def delete_machine(provider: str, ref: str) -> None:
    await _call(provider, "delete", lambda: compute(provider).delete(ref))


async def snapshot_machine(provider: str, ref: str, token: str) -> SnapshotInfo:
    return await _call(provider, "snapshot", lambda: compute(provider).snapshot(ref, token))


async def delete_machine_snapshot(provider: str, snapshot_ref: str) -> None:
    await _call(provider, "delete_snapshot", lambda: compute(provider).delete_snapshot(snapshot_ref))


async def restore_machine(provider: str, ref: str, snapshot_ref: str) -> None:
    await _call(provider, "restore", lambda: compute(provider).restore(ref, snapshot_ref))


async def rebuild_machine(provider: str, ref: str, request: RebuildRequest) -> None:
    await _call(provider, "rebuild", lambda: compute(provider).rebuild(ref, request))


async def suspend_machine(provider: str, ref: str) -> None:
    await _call(provider, "suspend", lambda: compute(provider).suspend(ref))


async def resume_machine(provider: str, ref: str) -> None:
    await _call(provider, "resume", lambda: compute(provider).resume(ref))


async def set_machine_firewall(provider: str, ref: str, rules: tuple[FirewallRule, ...]) -> None:
    await _call(provider, "set_firewall", lambda: compute(provider).set_firewall(ref, rules))


async def add_machine_address(provider: str, ref: str, address: str) -> None:
    await _call(provider, "add_address", lambda: compute(provider).add_address(ref, address))


async def set_machine_root_password(provider: str, ref: str, password_hash: str) -> None:
    await _call(provider, "set_root_password", lambda: compute(provider).set_root_password(ref, password_hash))


async def rent_instance(provider: str, request: RentRequest) -> Instance:
    return await _call(provider, "rent", lambda: market(provider).rent(request))


async def get_instance(provider: str, instance_id: str) -> Instance | None:
    return await _call(provider, "get_instance", lambda: market(provider).get_instance(instance_id))


# The database side.

_ops, _servers, _snapshots = table_of(Operation), table_of(Server), table_of(Snapshot)
_JOB = (
    select(
        _ops.c.id,
        _ops.c.kind,
        _ops.c.account_id,
        _ops.c.target_type,
        _ops.c.target_id,
        _ops.c.server_id,
        _ops.c.snapshot_id,
        _ops.c.actor_user_id,
        _ops.c.request_id,
        _ops.c.client_ip,
        _ops.c.created_at,
        _ops.c.executor_id,
        _ops.c.stage,
        _ops.c.params,
        _servers.c.provider,
        _servers.c.provider_ref,
        _snapshots.c.provider_ref.label("snapshot_ref"),
    )
    .outerjoin(_servers, _servers.c.id == _ops.c.server_id)
    .outerjoin(_snapshots, _snapshots.c.id == _ops.c.snapshot_id)
)


# Prebuilt: a workflow's writes are the engine's hot path, and a statement built per call costs more than it runs.
_CLAIM = (
    update(_ops)
    .where(
        _ops.c.id == bindparam("b_id"),
        or_(_ops.c.status == "pending", and_(_ops.c.status == "running", _ops.c.executor_id == bindparam("b_me"))),
    )
    .values(
        status="running",
        executor_id=bindparam("b_me"),
        attempts=_ops.c.attempts + 1,
        started_at=func.coalesce(_ops.c.started_at, bindparam("b_now")),
        progress=case((_ops.c.progress < 5, 5), else_=_ops.c.progress),
        updated_at=bindparam("b_now"),
    )
)
_JOB_OF = _JOB.where(_ops.c.id == bindparam("b_id"))
_HELD_JOB = _JOB.where(
    _ops.c.id == bindparam("b_id"), _ops.c.executor_id == bindparam("b_me"), _ops.c.status == "running"
)
# The SET clauses of these come from the keys of the parameters each call passes.
_HELD = update(_ops).where(
    _ops.c.id == bindparam("b_id"), _ops.c.executor_id == bindparam("b_me"), _ops.c.status == "running"
)
_SERVER = update(_servers).where(_servers.c.id == bindparam("b_id"))
_DEPLOYMENT = update(table_of(Deployment)).where(table_of(Deployment).c.id == bindparam("b_id"))
_SNAPSHOT = update(_snapshots).where(_snapshots.c.id == bindparam("b_id"))
# A server's task taken by an operation that did not claim it with its request: only once nothing else holds it.
_TAKE_SERVER = (
    update(_servers)
    .where(
        _servers.c.id == bindparam("b_id"),
        _servers.c.deleted_at.is_(None),
        _servers.c.task_state.is_(None),
        _servers.c.status.in_(bindparam("b_statuses", expanding=True)),
    )
    .values(task_state=bindparam("b_task"), updated_at=bindparam("b_now"))
)
_SERVER_NOW = select(_servers.c.status, _servers.c.task_state, _servers.c.deleted_at, _servers.c.provider_ref).where(
    _servers.c.id == bindparam("b_id")
)
_SNAPSHOTS_OF_SERVER = update(_snapshots).where(
    _snapshots.c.server_id == bindparam("b_server"), _snapshots.c.deleted_at.is_(None)
)


def claim(executor_id: str, op_id: str, *, held: bool = False) -> Job | None:
    """Make the operation this executor's to run: a pending one, or one it holds already (its previous life's, or
    one it took over). None when another process holds it or it has ended. `held`: the request recorded it as this
    executor's, running: it is only read."""
    if held:
        with core().db.connect() as conn:
            found = conn.execute(_HELD_JOB, {"b_id": op_id, "b_me": executor_id}).first()
        return None if found is None else Job(**{**found._asdict(), "params": dict(found.params or {})})
    with core().db.begin() as conn:
        result = conn.execute(_CLAIM, {"b_id": op_id, "b_me": executor_id, "b_now": utcnow()})
        if result.rowcount != 1:
            return None
        row = conn.execute(_JOB_OF, {"b_id": op_id}).one()
    return Job(**{**row._asdict(), "params": dict(row.params or {})})


def take_server(job: Job, task: str, statuses: list[str]) -> Row[Any, Any, Any, Any]:
    """Give the operation's server the task `task` if it has none and is in one of `statuses`, fenced by this run's
    hold on the operation (Abandoned when it lost it); the server as it is now (its task says whether it is ours)."""
    now = utcnow()
    with core().db.begin() as conn:
        held = conn.execute(_HELD, {"b_id": job.id, "b_me": job.executor_id, "updated_at": now})
        if held.rowcount != 1:
            raise Abandoned(job.id)
        conn.execute(_TAKE_SERVER, {"b_id": job.server_id, "b_task": task, "b_statuses": statuses, "b_now": now})
        return conn.execute(_SERVER_NOW, {"b_id": job.server_id}).one()


def server_now(job: Job) -> Row[Any, Any, Any, Any]:
    """The operation's server's status, task, deletion and machine, as they are now."""
    with core().db.connect() as conn:
        return conn.execute(_SERVER_NOW, {"b_id": job.server_id}).one()


@dataclass(frozen=True)
class Changes:
    """What a step changes with the operation, in one transaction."""

    server: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    # Every live snapshot of the server goes with it (a deleted server).
    delete_server_snapshots: bool = False
    # The server's extra addresses go back to their pools (a deleted server: its machine is gone).
    release_addresses: bool = False
    # The operation's deployment (its target).
    deployment: dict[str, Any] | None = None


def _update_rows(job: Job, op_values: dict[str, Any], changes: Changes) -> None:
    now = utcnow()
    with core().db.begin() as conn:
        # Fenced: only while this run still holds the operation. Another process that took it over, or a run that
        # ended it already, leaves this run nothing to change.
        held = conn.execute(_HELD, {"b_id": job.id, "b_me": job.executor_id, "updated_at": now, **op_values})
        if held.rowcount != 1:
            raise Abandoned(job.id)
        if changes.server and job.server_id is not None:
            conn.execute(_SERVER, {"b_id": job.server_id, "updated_at": now, **changes.server})
        if changes.delete_server_snapshots and job.server_id is not None:
            conn.execute(
                _SNAPSHOTS_OF_SERVER, {"b_server": job.server_id, "status": SnapshotStatus.DELETED, "deleted_at": now}
            )
        if changes.release_addresses and job.server_id is not None:
            conn.execute(delete(IpAddress).where(IpAddress.server_id == job.server_id))
        if changes.snapshot and job.snapshot_id is not None:
            conn.execute(_SNAPSHOT, {"b_id": job.snapshot_id, **changes.snapshot})
        if changes.deployment and job.target_type == "deployment":
            conn.execute(_DEPLOYMENT, {"b_id": job.target_id, "updated_at": now, **changes.deployment})
        outcome = op_values.get("status")
        if outcome == "succeeded":
            operations.record_event(conn, job, "succeeded")
        elif outcome == "failed":
            error = {"code": op_values.get("error_code"), "message": op_values.get("error")}
            operations.record_event(conn, job, "failed", error=error)


async def update_rows(job: Job, op_values: dict[str, Any], changes: Changes = Changes()) -> None:
    """Change the operation and what it acts on in one transaction, fenced by this run's hold on the operation
    (Abandoned when it lost it); an ending operation writes its outcome event in the same transaction (the
    outbox)."""
    await db(_update_rows, job, op_values, changes)
    crash_point("update_rows")


async def progress(job: Job, percent: int, changes: Changes = Changes(), *, stage: str | None = None) -> None:
    """Record how far the operation got; `stage` names a point a later run must not go back behind."""
    await update_rows(job, {"progress": percent, **({"stage": stage} if stage else {})}, changes)


async def succeed(job: Job, changes: Changes = Changes()) -> None:
    await update_rows(job, {"status": "succeeded", "progress": 100, "finished_at": utcnow(), "params": None}, changes)


async def fail(job: Job, code: str, message: str, changes: Changes) -> None:
    await update_rows(
        job,
        {"status": "failed", "error": message, "error_code": code, "finished_at": utcnow(), "params": None},
        changes,
    )


async def wait_for(job: Job, ref: str, target: MachineState) -> Machine:
    """Poll the provider until the machine reaches `target`. A run that resumes the operation polls afresh, with
    the provider's whole timeout."""
    assert job.provider is not None
    pacing = pacing_of(compute(job.provider))
    deadline = time.monotonic() + pacing.timeout_s
    while True:
        machine = await get_machine(job.provider, ref)
        if machine is None:
            raise ProviderError(f"Machine {ref} disappeared at the provider", retryable=False)
        if machine.state == target:
            return machine
        if machine.state == MachineState.ERROR:
            raise ProviderError(f"Machine {ref} went into an error state at the provider", retryable=False)
        if time.monotonic() > deadline:
            raise ProviderError(
                f"Timed out waiting for {ref} to be {target} (last seen {machine.state})", retryable=False
            )
        await asyncio.sleep(pacing.poll_interval_s)


def describe(error: BaseException) -> tuple[str, str]:
    """The code and message a user should see for a failure."""
    code = error.code if isinstance(error, CloudplaneError) else "INTERNAL_ERROR"
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return code, message


async def execute(core_: Core, executor_id: str, op_id: str, *, held: bool = False) -> None:
    """Claim the operation and run its workflow to its end: success, or a clear error with the workflow's cleanup.

    A database failure leaves the operation as it is, held by this executor, for the dispatcher's next sweep to
    run again: never a failure (and cleanup) for what may be a moment's outage."""
    _core.set(core_)
    try:
        job = await db(claim, executor_id, op_id, held=held)
    except SQLAlchemyError:
        log.warning("cannot claim operation %s now; the dispatcher's sweep will try again", op_id, exc_info=True)
        return
    if job is None:
        return
    _kind.set(job.kind)
    crash_point("update_rows")
    workflow = workflow_for(job.kind)
    try:
        try:
            await workflow.body(job)
            outcome = "succeeded"
        except (Abandoned, SQLAlchemyError):
            raise
        except Exception as error:  # noqa: BLE001 - any failure must end the operation, never leave it running
            code, message = describe(error)
            log.warning("operation %s (%s) failed: %s", job.id, job.kind, message)
            try:
                changes = await workflow.on_failure(job, message)
            except (Abandoned, SQLAlchemyError):
                raise
            except Exception as cleanup_error:  # noqa: BLE001 - the operation must still end
                log.exception("operation %s (%s): handling its failure failed too", job.id, job.kind)
                message += f" (and then: {cleanup_error})"
                changes = Changes(server={"status": ServerStatus.ERROR, "task_state": None, "error_message": message})
            await fail(job, code, message, changes)
            outcome = "failed"
    except Abandoned:
        log.info("operation %s (%s) is no longer this process's to run; left to its holder", job.id, job.kind)
        return
    except SQLAlchemyError:
        log.warning("operation %s (%s): database unavailable; it runs again on the next sweep", op_id, job.kind)
        return
    observability.operation_finished(job.kind, outcome, max(0.0, (utcnow() - job.created_at).total_seconds()))
