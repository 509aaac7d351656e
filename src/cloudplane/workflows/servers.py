"""The workflows of a server's life: create, start, stop, reboot, rebuild, reset_password and delete; and an administrator's
suspension of it (services/suspension.py): suspend and resume."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import Row, bindparam, func, select

from cloudplane.db.tables import Operation, Server, ServerSSHKey, SSHKey, utcnow
from cloudplane.domain.errors import ProviderError
from cloudplane.domain.states import ACTIONS, ServerStatus, TaskState
from cloudplane.providers.base import CreateRequest, MachineState, RebuildRequest, pacing_of
from cloudplane.workflows import steps
from cloudplane.workflows.kinds import Body, register
from cloudplane.workflows.steps import Changes, Job

MACHINE_STATE_FOR = {ServerStatus.RUNNING: MachineState.RUNNING, ServerStatus.STOPPED: MachineState.STOPPED}
SERVER_STATUS_FOR = {MachineState.RUNNING: ServerStatus.RUNNING, MachineState.STOPPED: ServerStatus.STOPPED}
# The stage a power action records once its provider call returned: a run that resumes it only waits.
CALLED = "called"
# A rebuild's stage once its machine has its fresh disk: a run that resumes it never re-images it again.
REBUILT = "rebuilt"
# The stages of an action on a running server that stops it first and starts it again after (a restore, a
# rebuild): its machine stopped; its machine being started again.
STOPPED_FIRST = "stopped_first"
RESTARTING = "restarting"


_IMAGE_OF = select(Server.image_id).where(Server.id == bindparam("b_id"))
_PUBLIC_KEYS = select(SSHKey.public_key).join(ServerSSHKey).where(ServerSSHKey.server_id == bindparam("b_id"))
# The server and its keys (one per line: an OpenSSH public key holds no newline) in one statement: on PostgreSQL
# every statement is a round trip, and a burst of creates is made of round trips.
_SERVER_TO_MAKE = select(
    Server.id,
    Server.hostname,
    Server.plan_id,
    Server.image_id,
    Server.location_id,
    select(func.aggregate_strings(SSHKey.public_key, "\n"))
    .join(ServerSSHKey)
    .where(ServerSSHKey.server_id == Server.id)
    .scalar_subquery()
    .label("public_keys"),
).where(Server.id == bindparam("b_id"))
_CREATE_TOKEN = select(Operation.id).where(
    Operation.server_id == bindparam("b_id"), Operation.kind.in_(("create", "rent"))
)


def create_request(job: Job) -> CreateRequest:
    """What the provider needs to make the server: its plan, image, location, keys and root password hash."""
    core = steps.core()
    view = core.catalog.view()
    with core.db.connect() as conn:
        server = conn.execute(_SERVER_TO_MAKE, {"b_id": job.server_id}).one()
    keys = server.public_keys.split("\n") if server.public_keys else []
    plan, image, location = view.plan(server.plan_id), view.image(server.image_id), view.location(server.location_id)
    return CreateRequest(
        token=job.id,
        name=f"cp-{server.id}",
        hostname=server.hostname,
        cpu=plan.cpu,
        ram_mb=plan.ram_mb,
        disk_gb=plan.disk_gb,
        image=image.slug,
        location=location.slug,
        ssh_public_keys=tuple(keys),
        root_password_hash=job.params.get("root_password_hash"),
    )


async def _create(job: Job) -> None:
    assert job.provider is not None
    ref = job.provider_ref
    machine = None
    if ref is None:  # not made yet, or made by a run that stopped before recording it: the token finds it then
        machine = await steps.create_machine(job.provider, await steps.db(create_request, job))
        ref = machine.ref
        if machine.state != MachineState.RUNNING:
            await steps.progress(job, 30, Changes(server={"provider_ref": ref}))
    if machine is None or machine.state != MachineState.RUNNING:
        machine = await steps.wait_for(job, ref, MachineState.RUNNING)
    await steps.succeed(
        job,
        Changes(
            server={
                "status": ServerStatus.RUNNING,
                "task_state": None,
                "provider_ref": ref,
                "ipv4": machine.public_ipv4,
                "private_ipv4": machine.private_ipv4,
            }
        ),
    )


async def remove_what_create_made(job: Job, message: str) -> Changes:
    """A failed create (or rent) removes whatever the provider made with the operation's token."""
    assert job.provider is not None
    try:
        made = await steps.find_machine(job.provider, job.id)
        if made is not None:
            await steps.delete_machine(job.provider, made.ref)
    except Exception as cleanup_error:  # noqa: BLE001 - recorded; the reconciler reports the orphan
        message += f" (cleanup failed too: {cleanup_error})"
    return Changes(
        server={"status": ServerStatus.ERROR, "task_state": None, "provider_ref": None, "error_message": message}
    )


async def settle_on_machine(job: Job, message: str) -> Changes:
    """A failed action leaves the server as the provider shows it, or in error when it cannot tell."""
    machine = None
    if job.provider and job.provider_ref:
        try:
            machine = await steps.get_machine(job.provider, job.provider_ref)
        except Exception:  # noqa: BLE001 - the provider is failing; fall back to error
            machine = None
    status = SERVER_STATUS_FOR.get(machine.state, ServerStatus.ERROR) if machine else ServerStatus.ERROR
    return Changes(server={"status": status, "task_state": None, "error_message": message})


def _power_action(kind: str) -> Body:
    target = ACTIONS[kind].ends_in
    assert target is not None
    call = {"start": steps.start_machine, "stop": steps.stop_machine, "reboot": steps.reboot_machine}[kind]

    async def body(job: Job) -> None:
        assert job.provider is not None and job.provider_ref is not None
        if job.stage != CALLED:
            await call(job.provider, job.provider_ref)
            machine = await steps.get_machine(job.provider, job.provider_ref)
            if machine is None or machine.state != MACHINE_STATE_FOR[target]:
                # A run that resumes it only waits: a second reboot is not what was asked for.
                await steps.progress(job, 50, stage=CALLED)
                await steps.wait_for(job, job.provider_ref, MACHINE_STATE_FOR[target])
        else:
            await steps.wait_for(job, job.provider_ref, MACHINE_STATE_FOR[target])
        await steps.succeed(job, Changes(server={"status": target, "task_state": None}))

    return body


def rebuild_request(job: Job) -> RebuildRequest:
    """What the server's fresh disk gets: the image and keys the request recorded on the server, and the root
    password hash it put in the operation's params."""
    core = steps.core()
    with core.db.connect() as conn:
        image_id = conn.execute(_IMAGE_OF, {"b_id": job.server_id}).scalar_one()
        keys = conn.scalars(_PUBLIC_KEYS, {"b_id": job.server_id}).all()
    assert image_id is not None, "a server without a catalog image (a rented one) is never rebuilt"
    return RebuildRequest(
        token=job.id,
        image=core.catalog.view().image(image_id).slug,
        ssh_public_keys=tuple(keys),
        root_password_hash=job.params.get("root_password_hash"),
    )


async def _rebuild(job: Job) -> None:
    """Re-image the server's machine. A running server is stopped first and started again after, and ends running; a
    stopped one ends stopped. `job.stage` is where an earlier run got to: once the machine was rebuilt (REBUILT) a
    run never rebuilds it again, and once it was being started (RESTARTING) it only starts it."""
    assert job.provider is not None and job.provider_ref is not None
    restart = bool(job.params.get("restart"))
    if restart and job.stage is None:
        await stop_first(job, 20)
    if job.stage in (None, STOPPED_FIRST):
        request = await steps.db(rebuild_request, job)
        await steps.rebuild_machine(job.provider, job.provider_ref, request)
        await steps.progress(job, 70, stage=REBUILT)
    if not restart:
        await steps.wait_for(job, job.provider_ref, MachineState.STOPPED)
        await steps.succeed(job, Changes(server={"task_state": None, "error_message": None}))
        return
    await start_again(job, 85, {"error_message": None})


async def stop_first(job: Job, percent: int) -> None:
    """The first step of an action on a running server that must be stopped for it: its machine stopped, and
    STOPPED_FIRST recorded."""
    assert job.provider is not None and job.provider_ref is not None
    await steps.stop_machine(job.provider, job.provider_ref)
    await steps.wait_for(job, job.provider_ref, MachineState.STOPPED)
    await steps.progress(job, percent, stage=STOPPED_FIRST)


async def start_again(job: Job, percent: int, changes: dict[str, Any] | None = None) -> None:
    """The last step of such an action: RESTARTING recorded (a later run only starts the machine), the machine
    started, and the operation succeeds with the server running (and `changes`)."""
    assert job.provider is not None and job.provider_ref is not None
    if job.stage != RESTARTING:
        await steps.progress(job, percent, stage=RESTARTING)
    await steps.start_machine(job.provider, job.provider_ref)
    await steps.wait_for(job, job.provider_ref, MachineState.RUNNING)
    await steps.succeed(job, Changes(server={"status": ServerStatus.RUNNING, "task_state": None, **(changes or {})}))


async def _reset_password(job: Job) -> None:
    """Set the hash the request put in the operation's params inside the running machine; a re-run sets it again,
    which changes nothing."""
    assert job.provider is not None and job.provider_ref is not None
    await steps.set_machine_root_password(job.provider, job.provider_ref, job.params["root_password_hash"])
    await steps.succeed(job, Changes(server={"task_state": None, "error_message": None}))


def create_token(job: Job) -> str | None:
    """The id of the server's create operation: the token of a machine the server may have without knowing it."""
    with steps.core().db.connect() as conn:
        return conn.scalar(_CREATE_TOKEN, {"b_id": job.server_id})


async def _delete(job: Job) -> None:
    assert job.provider is not None
    ref = job.provider_ref
    if ref is None:
        token = await steps.db(create_token, job)
        made = await steps.find_machine(job.provider, token) if token else None
        ref = made.ref if made else None
    if ref is not None:
        await steps.delete_machine(job.provider, ref)
    await steps.succeed(
        job,
        Changes(
            server={"status": ServerStatus.DELETED, "task_state": None, "deleted_at": utcnow()},
            delete_server_snapshots=True,
            release_addresses=True,
        ),
    )


# The statuses a suspension acts on: a server being created is frozen once it runs.
SUSPENDABLE = [ServerStatus.RUNNING.value, ServerStatus.STOPPED.value, ServerStatus.ERROR.value]


async def hold_for(job: Job, task: TaskState) -> Row[Any, Any, Any, Any] | None:
    """The server, held for `task`: at once when the request claimed it, else once the action that held it then
    (an owner's stop, a create) has ended. None when the server was deleted meanwhile."""
    assert job.provider is not None
    pacing = pacing_of(steps.compute(job.provider))
    deadline = time.monotonic() + pacing.timeout_s
    while True:
        server = await steps.db(steps.take_server, job, task, SUSPENDABLE)
        if server.deleted_at is not None:
            return None
        if server.task_state == task:
            return server
        if time.monotonic() > deadline:
            raise ProviderError(
                f"Timed out waiting for the server to finish {server.task_state or server.status}", retryable=False
            )
        await asyncio.sleep(pacing.poll_interval_s)


async def _suspend(job: Job) -> None:
    """Freeze a running server's machine; a stopped (or failed) one needs only the flag the request set."""
    assert job.provider is not None
    server = await hold_for(job, TaskState.SUSPENDING)
    if server is not None and server.status == ServerStatus.RUNNING and server.provider_ref is not None:
        if job.stage != CALLED:
            await steps.suspend_machine(job.provider, server.provider_ref)
            await steps.progress(job, 50, stage=CALLED)
        await steps.wait_for(job, server.provider_ref, MachineState.SUSPENDED)
    await steps.succeed(job, Changes(server={"task_state": None} if server is not None else None))


async def _resume(job: Job) -> None:
    """Thaw a running server's machine and lift the flag: the server is as it was before its suspension."""
    assert job.provider is not None
    server = await hold_for(job, TaskState.RESUMING)
    if server is not None and server.status == ServerStatus.RUNNING and server.provider_ref is not None:
        if job.stage != CALLED:
            machine = await steps.get_machine(job.provider, server.provider_ref)
            # A suspension that failed may have left the machine running: nothing to thaw then.
            if machine is not None and machine.state != MachineState.RUNNING:
                await steps.resume_machine(job.provider, server.provider_ref)
            await steps.progress(job, 50, stage=CALLED)
        await steps.wait_for(job, server.provider_ref, MachineState.RUNNING)
    changes = {"task_state": None, "suspended_at": None, "error_message": None}
    await steps.succeed(job, Changes(server=changes if server is not None else None))


async def suspension_failed(job: Job, message: str) -> Changes:
    """A failed suspend or resume leaves the server suspended (its owner still refused) in the power state it had,
    and frees its task if this operation held it (not when it timed out waiting for another action)."""
    server = await steps.db(steps.server_now, job)
    if server.task_state in (TaskState.SUSPENDING, TaskState.RESUMING):
        return Changes(server={"task_state": None, "error_message": message})
    return Changes()


register("create", _create, remove_what_create_made)
for power in ("start", "stop", "reboot"):
    register(power, _power_action(power), settle_on_machine)
register("rebuild", _rebuild, settle_on_machine)
register("reset_password", _reset_password, settle_on_machine)
register("delete", _delete, settle_on_machine)
register("suspend", _suspend, suspension_failed)
register("resume", _resume, suspension_failed)
