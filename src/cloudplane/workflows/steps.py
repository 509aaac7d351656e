"""What every operation's workflow is made of: loading its operation, typed provider calls as durable steps,
changing rows with their events in one transaction, waiting on a machine, and the frame that ends every
operation in success or a clear error.

Each provider call is one step that retries what the provider says is retryable (calls are idempotent, see
providers/base.py). `CLOUDPLANE_CRASH_AT=<kind>:<step>` (honoured only with `CLOUDPLANE_TEST_HOOKS=1`) kills
the process right after that step's call returned and before its result was recorded: the worst moment, which
the crash tests use to prove a re-run step finds what the first attempt made.
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
from typing import Any, TypeVar

from dbos import DBOS
from sqlalchemy import update

from cloudplane import observability
from cloudplane.db.tables import Operation, Server, Snapshot, utcnow
from cloudplane.domain.errors import CloudplaneError, ProviderError
from cloudplane.domain.states import SnapshotStatus
from cloudplane.providers.base import CreateRequest, Machine, MachineState, Provider, SnapshotInfo, pacing_of
from cloudplane.providers.marketplace import Instance, MarketplaceProvider, RentRequest
from cloudplane.services import operations
from cloudplane.workflows.engine import current_core

log = logging.getLogger(__name__)
T = TypeVar("T")

# The kind of operation the running workflow carries, for crash points and metrics; set by `run`.
_kind: ContextVar[str] = ContextVar("cloudplane_operation_kind", default="")

RETRY_ATTEMPTS = 6
RETRY_FIRST_DELAY_S = 0.2


@dataclass(frozen=True)
class Job:
    """An operation as its workflow reads it: the row's facts plus what its server and snapshot say."""

    id: str
    kind: str
    status: str
    account_id: int
    target_type: str
    target_id: str
    server_id: int | None
    snapshot_id: int | None
    actor_user_id: int | None
    request_id: str | None
    client_ip: str | None
    params: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    provider_ref: str | None = None
    snapshot_ref: str | None = None


def crash_point(step: str) -> None:
    """Die here if the test hooks ask for it (see the module docstring)."""
    settings = current_core().settings
    if settings.test_hooks and settings.crash_at and settings.crash_at == f"{_kind.get()}:{step}":
        log.warning("CLOUDPLANE_CRASH_AT=%s reached: killing the process", settings.crash_at)
        os.kill(os.getpid(), signal.SIGKILL)


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
    return current_core().providers.get(provider)


def market(provider: str) -> MarketplaceProvider:
    return current_core().providers.market(provider)


# Typed provider calls, one durable step each.


@DBOS.step()
async def create_machine(provider: str, request: CreateRequest) -> Machine:
    return await _call(provider, "create", lambda: compute(provider).create(request))


@DBOS.step()
async def get_machine(provider: str, ref: str) -> Machine | None:
    return await _call(provider, "get", lambda: compute(provider).get(ref))


@DBOS.step()
async def find_machine(provider: str, token: str) -> Machine | None:
    return await _call(provider, "find_by_token", lambda: compute(provider).find_by_token(token))


@DBOS.step()
async def start_machine(provider: str, ref: str) -> None:
    await _call(provider, "start", lambda: compute(provider).start(ref))


@DBOS.step()
async def stop_machine(provider: str, ref: str) -> None:
    await _call(provider, "stop", lambda: compute(provider).stop(ref))


@DBOS.step()
async def reboot_machine(provider: str, ref: str) -> None:
    await _call(provider, "reboot", lambda: compute(provider).reboot(ref))


@DBOS.step()
async def delete_machine(provider: str, ref: str) -> None:
    await _call(provider, "delete", lambda: compute(provider).delete(ref))


@DBOS.step()
async def snapshot_machine(provider: str, ref: str, token: str) -> SnapshotInfo:
    return await _call(provider, "snapshot", lambda: compute(provider).snapshot(ref, token))


@DBOS.step()
async def delete_machine_snapshot(provider: str, snapshot_ref: str) -> None:
    await _call(provider, "delete_snapshot", lambda: compute(provider).delete_snapshot(snapshot_ref))


@DBOS.step()
async def restore_machine(provider: str, ref: str, snapshot_ref: str) -> None:
    await _call(provider, "restore", lambda: compute(provider).restore(ref, snapshot_ref))


@DBOS.step()
async def rent_instance(provider: str, request: RentRequest) -> Instance:
    return await _call(provider, "rent", lambda: market(provider).rent(request))


@DBOS.step()
async def get_instance(provider: str, instance_id: str) -> Instance | None:
    return await _call(provider, "get_instance", lambda: market(provider).get_instance(instance_id))


@DBOS.step()
async def clock() -> float:
    return time.time()


# The database side.


@DBOS.step()
async def load_job(op_id: str) -> Job:
    with current_core().db.read() as s:
        op = s.get(Operation, op_id)
        if op is None:
            raise ProviderError(f"operation {op_id} vanished", retryable=False)
        server = s.get(Server, op.server_id) if op.server_id else None
        snap = s.get(Snapshot, op.snapshot_id) if op.snapshot_id else None
        return Job(
            id=op.id,
            kind=op.kind,
            status=op.status,
            account_id=op.account_id,
            target_type=op.target_type,
            target_id=op.target_id,
            server_id=op.server_id,
            snapshot_id=op.snapshot_id,
            actor_user_id=op.actor_user_id,
            request_id=op.request_id,
            client_ip=op.client_ip,
            params=dict(op.params or {}),
            provider=server.provider if server else None,
            provider_ref=server.provider_ref if server else None,
            snapshot_ref=snap.provider_ref if snap else None,
        )


@dataclass(frozen=True)
class Changes:
    """What a step changes with the operation, in one transaction."""

    server: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    # Every live snapshot of the server goes with it (a deleted server).
    delete_server_snapshots: bool = False


@DBOS.step()
async def update_rows(job: Job, op_values: dict[str, Any], changes: Changes = Changes()) -> None:
    """Change the operation and what it acts on in one transaction; an ending operation writes its outcome event
    in the same transaction (the outbox)."""
    now = utcnow()
    with current_core().db.write() as s:
        if changes.server and job.server_id is not None:
            s.execute(update(Server).where(Server.id == job.server_id).values(updated_at=now, **changes.server))
        if changes.delete_server_snapshots and job.server_id is not None:
            s.execute(
                update(Snapshot)
                .where(Snapshot.server_id == job.server_id, Snapshot.deleted_at.is_(None))
                .values(status=SnapshotStatus.DELETED, deleted_at=now)
            )
        if changes.snapshot and job.snapshot_id is not None:
            s.execute(update(Snapshot).where(Snapshot.id == job.snapshot_id).values(**changes.snapshot))
        outcome = op_values.get("status")
        if outcome in ("succeeded", "failed"):
            op_values = {**op_values, "finished_at": now, "params": None}
            if outcome == "succeeded":
                operations.record_event(s, job, "succeeded")
            else:
                error = {"code": op_values.get("error_code"), "message": op_values.get("error")}
                operations.record_event(s, job, "failed", error=error)
        s.execute(update(Operation).where(Operation.id == job.id).values(updated_at=now, **op_values))
    crash_point("update_rows")


async def progress(job: Job, percent: int, changes: Changes = Changes()) -> None:
    await update_rows(job, {"status": "running", "progress": percent}, changes)


async def succeed(job: Job, changes: Changes = Changes()) -> None:
    await update_rows(job, {"status": "succeeded", "progress": 100}, changes)


async def wait_for(job: Job, ref: str, target: MachineState) -> Machine:
    """Poll the provider until the machine reaches `target`; durable sleeps, so a crash resumes the wait."""
    assert job.provider is not None
    pacing = pacing_of(compute(job.provider))
    deadline = await clock() + pacing.timeout_s
    while True:
        machine = await get_machine(job.provider, ref)
        if machine is None:
            raise ProviderError(f"Machine {ref} disappeared at the provider", retryable=False)
        if machine.state == target:
            return machine
        if machine.state == MachineState.ERROR:
            raise ProviderError(f"Machine {ref} went into an error state at the provider", retryable=False)
        if await clock() > deadline:
            raise ProviderError(
                f"Timed out waiting for {ref} to be {target} (last seen {machine.state})", retryable=False
            )
        await DBOS.sleep_async(pacing.poll_interval_s)


def describe(error: BaseException) -> tuple[str, str]:
    """The code and message a user should see for a failure."""
    code = error.code if isinstance(error, CloudplaneError) else "INTERNAL_ERROR"
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return code, message


Body = Callable[[Job], Awaitable[None]]
OnFailure = Callable[[Job, str], Awaitable[Changes]]


async def run(op_id: str, body: Body, on_failure: OnFailure) -> str:
    """The frame of every operation's workflow: skip a finished operation (a second start), mark it started,
    run its body, and end a failure in a clear error state with `on_failure`'s changes (cleanup included)."""
    job = await load_job(op_id)
    _kind.set(job.kind)
    if job.status in ("succeeded", "failed"):
        return job.status
    started = await clock()
    await update_rows(job, {"status": "running", "progress": 5, "started_at": utcnow()})
    try:
        await body(job)
    except Exception as error:  # noqa: BLE001 - any failure must end the operation, never leave it running
        code, message = describe(error)
        log.warning("operation %s (%s) failed: %s", job.id, job.kind, message)
        try:
            changes = await on_failure(job, message)
        except Exception as cleanup_error:  # noqa: BLE001 - the operation must still end
            log.exception("operation %s (%s): handling its failure failed too", job.id, job.kind)
            message += f" (and then: {cleanup_error})"
            changes = Changes(server={"status": "error", "task_state": None, "error_message": message})
        await update_rows(job, {"status": "failed", "error": message, "error_code": code}, changes)
        outcome = "failed"
    else:
        outcome = "succeeded"
    observability.operation_finished(job.kind, outcome, max(0.0, await clock() - started))
    return outcome
