"""The workflow behind every Operation: one durable function dispatching on the operation's kind.

Each provider call is a step with retries (calls are idempotent, see providers/base.py); each database
change is a step whose last one finishes the server and the operation in one transaction. A failure ends in
a clear error state and cleans up what a half-done create made, so nothing is orphaned or stuck.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dbos import DBOS
from dbos._error import DBOSMaxStepRetriesExceeded
from sqlalchemy import select, update

from cloudplane.db.tables import Operation, Server, ServerSSHKey, Snapshot, SSHKey, utcnow
from cloudplane.domain.errors import ProviderError
from cloudplane.domain.states import ACTIONS, ServerStatus, SnapshotStatus
from cloudplane.providers.base import CreateRequest, Machine, MachineState, pacing_of
from cloudplane.providers.marketplace import Instance, RentRequest
from cloudplane.workflows.engine import current_core

MACHINE_STATE_FOR = {ServerStatus.RUNNING: MachineState.RUNNING, ServerStatus.STOPPED: MachineState.STOPPED}


@dataclass(frozen=True)
class OperationView:
    id: str
    kind: str
    status: str
    server_id: int | None
    snapshot_id: int | None
    provider: str | None = None
    provider_ref: str | None = None
    snapshot_ref: str | None = None
    create_request: CreateRequest | None = None
    rent_request: RentRequest | None = None
    create_token: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _retryable(error: BaseException) -> bool:
    return bool(getattr(error, "retryable", False))


@DBOS.step(retries_allowed=True, max_attempts=6, interval_seconds=0.2, backoff_rate=2.0, should_retry=_retryable)
async def provider_call(provider: str, method: str, *args: Any) -> Any:
    """Every call the workflows make to a provider; safe to retry because provider calls are idempotent."""
    return await getattr(current_core().providers.get(provider), method)(*args)


@DBOS.step(retries_allowed=True, max_attempts=6, interval_seconds=0.2, backoff_rate=2.0, should_retry=_retryable)
async def market_call(provider: str, method: str, *args: Any) -> Any:
    """Calls to a GPU marketplace (renting); idempotent like every provider call."""
    return await getattr(current_core().providers.market(provider), method)(*args)


@DBOS.step()
async def clock() -> float:
    return time.time()


@DBOS.step()
async def load_operation(op_id: str) -> OperationView:
    core = current_core()
    with core.db.read() as s:
        op = s.get(Operation, op_id)
        assert op is not None, f"operation {op_id} vanished"
        server = s.get(Server, op.server_id) if op.server_id else None
        snap = s.get(Snapshot, op.snapshot_id) if op.snapshot_id else None
        create_request = None
        rent_request = None
        create_token = None
        if server is not None and op.kind == "create":
            view = core.catalog.view()
            plan, image, location = (
                view.plan(server.plan_id),
                view.image(server.image_id),
                view.location(server.location_id),
            )
            keys = s.scalars(
                select(SSHKey.public_key).join(ServerSSHKey).where(ServerSSHKey.server_id == server.id)
            ).all()
            params = json.loads(op.params or "{}")
            create_request = CreateRequest(
                token=op.id,
                name=f"cp-{server.id}",
                hostname=server.hostname,
                cpu=plan.cpu,
                ram_mb=plan.ram_mb,
                disk_gb=plan.disk_gb,
                image=image.slug,
                location=location.slug,
                ssh_public_keys=tuple(keys),
                root_password_hash=params.get("root_password_hash"),
            )
        elif server is not None and op.kind == "rent":
            params = json.loads(op.params or "{}")
            rent_request = RentRequest(
                token=op.id,
                offer_id=params["offer_id"],
                image=params["image"],
                label=params["label"],
                onstart_script=params.get("onstart_script"),
                ssh_key=params.get("ssh_key"),
            )
        elif server is not None and server.provider_ref is None:
            create_token = s.scalar(
                select(Operation.id).where(Operation.server_id == server.id, Operation.kind == "create")
            )
        return OperationView(
            id=op.id,
            kind=op.kind,
            status=op.status,
            server_id=op.server_id,
            snapshot_id=op.snapshot_id,
            provider=server.provider if server else None,
            provider_ref=server.provider_ref if server else None,
            snapshot_ref=snap.provider_ref if snap else None,
            create_request=create_request,
            rent_request=rent_request,
            create_token=create_token,
        )


@DBOS.step()
async def update_rows(
    op_id: str,
    op_values: dict[str, Any],
    server_id: int | None = None,
    server_values: dict[str, Any] | None = None,
    snapshot_id: int | None = None,
    snapshot_values: dict[str, Any] | None = None,
    delete_server_snapshots: bool = False,
) -> None:
    """Change the operation and the objects it acts on in one transaction."""
    now = utcnow()
    with current_core().db.write() as s:
        if server_values and server_id is not None:
            s.execute(update(Server).where(Server.id == server_id).values(updated_at=now, **server_values))
        if delete_server_snapshots and server_id is not None:
            s.execute(
                update(Snapshot)
                .where(Snapshot.server_id == server_id, Snapshot.deleted_at.is_(None))
                .values(status=SnapshotStatus.DELETED, deleted_at=now)
            )
        if snapshot_values and snapshot_id is not None:
            s.execute(update(Snapshot).where(Snapshot.id == snapshot_id).values(**snapshot_values))
        if op_values.get("status") in ("succeeded", "failed"):
            op_values = {**op_values, "finished_at": now, "params": None}
        s.execute(update(Operation).where(Operation.id == op_id).values(updated_at=now, **op_values))


async def progress(op: OperationView, percent: int) -> None:
    await update_rows(op.id, {"status": "running", "progress": percent})


async def wait_for(op: OperationView, ref: str, target: MachineState) -> Machine:
    """Poll the provider until the machine reaches `target`; durable sleeps, so a crash resumes the wait."""
    pacing = pacing_of(current_core().providers.get(op.provider))
    interval = pacing.poll_interval_s
    deadline = await clock() + pacing.timeout_s
    while True:
        machine: Machine | None = await provider_call(op.provider, "get", ref)
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
        await DBOS.sleep_async(interval)


async def create(op: OperationView) -> None:
    assert op.create_request is not None
    machine = await provider_call(op.provider, "create", op.create_request)
    await update_rows(op.id, {"status": "running", "progress": 30}, op.server_id, {"provider_ref": machine.ref})
    machine = await wait_for(op, machine.ref, MachineState.RUNNING)
    await update_rows(
        op.id,
        {"status": "succeeded", "progress": 100},
        op.server_id,
        {
            "status": ServerStatus.RUNNING,
            "task_state": None,
            "ipv4": machine.public_ipv4,
            "private_ipv4": machine.private_ipv4,
        },
    )


def instance_details(instance: Instance) -> dict[str, Any]:
    """The server columns a rented instance fills in."""
    return {
        "gpu_model": instance.gpu_model or None,
        "gpu_count": instance.gpu_count or None,
        "cpu_count": instance.cpu_count or None,
        "ram_gb": instance.ram_gb or None,
        "storage_gb": instance.storage_gb or None,
        "price_per_hour": instance.price_per_hour or None,
        "region": instance.region or None,
        "ipv4": instance.public_ipaddr,
        "provider_data": json.dumps(
            {
                "machine_id": instance.machine_id,
                "image": instance.image,
                "onstart_script": instance.onstart_script,
                "ssh_host": instance.ssh_host,
                "ssh_port": instance.ssh_port,
                "public_ipaddr": instance.public_ipaddr,
                "status_detail": instance.status_detail,
            }
        ),
    }


async def rent(op: OperationView) -> None:
    assert op.rent_request is not None
    instance = await market_call(op.provider, "rent", op.rent_request)
    await update_rows(
        op.id,
        {"status": "running", "progress": 30},
        op.server_id,
        {"provider_ref": instance.instance_id, **instance_details(instance)},
    )
    await wait_for(op, instance.instance_id, MachineState.RUNNING)
    instance = await market_call(op.provider, "get_instance", instance.instance_id)
    await update_rows(
        op.id,
        {"status": "succeeded", "progress": 100},
        op.server_id,
        {"status": ServerStatus.RUNNING, "task_state": None, **instance_details(instance)},
    )


def _power_action(method: str, target: ServerStatus) -> Callable[[OperationView], Awaitable[None]]:
    async def run(op: OperationView) -> None:
        await provider_call(op.provider, method, op.provider_ref)
        await progress(op, 50)
        await wait_for(op, op.provider_ref, MACHINE_STATE_FOR[target])
        await update_rows(
            op.id, {"status": "succeeded", "progress": 100}, op.server_id, {"status": target, "task_state": None}
        )

    run.__name__ = method
    return run


async def delete(op: OperationView) -> None:
    ref = op.provider_ref
    if ref is None and op.create_token:
        made = await provider_call(op.provider, "find_by_token", op.create_token)
        ref = made.ref if made else None
    if ref is not None:
        await provider_call(op.provider, "delete", ref)
    await update_rows(
        op.id,
        {"status": "succeeded", "progress": 100},
        op.server_id,
        {"status": ServerStatus.DELETED, "task_state": None, "deleted_at": utcnow()},
        delete_server_snapshots=True,
    )


async def snapshot(op: OperationView) -> None:
    info = await provider_call(op.provider, "snapshot", op.provider_ref, op.id)
    await update_rows(
        op.id,
        {"status": "succeeded", "progress": 100},
        op.server_id,
        {"task_state": None},
        op.snapshot_id,
        {"status": SnapshotStatus.AVAILABLE, "provider_ref": info.ref, "size_gb": info.size_gb},
    )


async def delete_snapshot(op: OperationView) -> None:
    if op.snapshot_ref is not None:
        await provider_call(op.provider, "delete_snapshot", op.snapshot_ref)
    await update_rows(
        op.id,
        {"status": "succeeded", "progress": 100},
        snapshot_id=op.snapshot_id,
        snapshot_values={"status": SnapshotStatus.DELETED, "deleted_at": utcnow()},
    )


async def restore(op: OperationView) -> None:
    await provider_call(op.provider, "restore", op.provider_ref, op.snapshot_ref)
    await progress(op, 50)
    await wait_for(op, op.provider_ref, MachineState.STOPPED)
    await update_rows(op.id, {"status": "succeeded", "progress": 100}, op.server_id, {"task_state": None})


HANDLERS: dict[str, Callable[[OperationView], Awaitable[None]]] = {
    "create": create,
    "rent": rent,
    "start": _power_action("start", ACTIONS["start"].ends_in),  # type: ignore[arg-type]
    "stop": _power_action("stop", ACTIONS["stop"].ends_in),  # type: ignore[arg-type]
    "reboot": _power_action("reboot", ACTIONS["reboot"].ends_in),  # type: ignore[arg-type]
    "delete": delete,
    "snapshot": snapshot,
    "delete_snapshot": delete_snapshot,
    "restore": restore,
}


def describe(error: BaseException) -> str:
    """The message a user should see; for exhausted retries, the last underlying error."""
    if isinstance(error, DBOSMaxStepRetriesExceeded) and error.errors:
        return f"{describe(error.errors[-1])} (gave up after {error.max_retries} attempts)"
    return getattr(error, "message", None) or str(error) or type(error).__name__


async def fail(op: OperationView, error: BaseException) -> None:
    """End the operation in a clear error state; a failed create removes whatever the provider made."""
    message = describe(error)
    server_values: dict[str, Any] | None = {"task_state": None}
    snapshot_values = None
    if op.kind in ("create", "rent"):
        try:
            made = await provider_call(op.provider, "find_by_token", op.id)
            if made is not None:
                await provider_call(op.provider, "delete", made.ref)
        except Exception as cleanup_error:  # noqa: BLE001 - recorded; the reconciler removes the orphan
            message += f" (cleanup failed too: {cleanup_error})"
        server_values = {
            "status": ServerStatus.ERROR,
            "task_state": None,
            "provider_ref": None,
            "error_message": message,
        }
    elif op.kind in ("start", "stop", "reboot", "restore", "delete"):
        # Settle on what the provider really shows, or error if it cannot tell.
        machine = None
        if op.provider_ref:
            try:
                machine = await provider_call(op.provider, "get", op.provider_ref)
            except Exception:  # noqa: BLE001 - the provider is failing; fall back to error
                machine = None
        status = {MachineState.RUNNING: ServerStatus.RUNNING, MachineState.STOPPED: ServerStatus.STOPPED}.get(
            machine.state if machine else None,
            ServerStatus.ERROR,  # type: ignore[arg-type]
        )
        server_values = {"status": status, "task_state": None, "error_message": message}
    if op.kind in ("snapshot", "delete_snapshot"):
        snapshot_values = {"status": SnapshotStatus.ERROR, "error_message": message}
    if op.kind == "delete_snapshot":
        server_values = None
    await update_rows(
        op.id,
        {"status": "failed", "error": message},
        op.server_id,
        server_values,
        op.snapshot_id,
        snapshot_values,
    )


@DBOS.workflow()
async def run_operation(op_id: str) -> str:
    op = await load_operation(op_id)
    if op.status in ("succeeded", "failed"):
        return op.status
    await progress(op, 5)
    try:
        await HANDLERS[op.kind](op)
    except Exception as error:  # noqa: BLE001 - any failure must end the operation, never leave it running
        DBOS.logger.warning("operation %s (%s) failed: %s", op.id, op.kind, error)
        await fail(op, error)
        return "failed"
    return "succeeded"
