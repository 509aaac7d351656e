"""The workflows of snapshots: take one, delete one, restore a server from one."""

from __future__ import annotations

from cloudplane.db.tables import utcnow
from cloudplane.domain.states import SnapshotStatus
from cloudplane.providers.base import MachineState
from cloudplane.workflows import steps
from cloudplane.workflows.kinds import register
from cloudplane.workflows.servers import CALLED, RESTARTING, STOPPED_FIRST, settle_on_machine, start_again, stop_first
from cloudplane.workflows.steps import Changes, Job


async def _snapshot(job: Job) -> None:
    assert job.provider is not None and job.provider_ref is not None
    info = await steps.snapshot_machine(job.provider, job.provider_ref, job.id)
    await steps.succeed(
        job,
        Changes(
            server={"task_state": None},
            snapshot={"status": SnapshotStatus.AVAILABLE, "provider_ref": info.ref, "size_gb": info.size_gb},
        ),
    )


async def _snapshot_failed(job: Job, message: str) -> Changes:
    return Changes(server={"task_state": None}, snapshot={"status": SnapshotStatus.ERROR, "error_message": message})


async def _delete_snapshot(job: Job) -> None:
    if job.snapshot_ref is not None:
        assert job.provider is not None
        await steps.delete_machine_snapshot(job.provider, job.snapshot_ref)
    await steps.succeed(job, Changes(snapshot={"status": SnapshotStatus.DELETED, "deleted_at": utcnow()}))


async def _delete_snapshot_failed(job: Job, message: str) -> Changes:
    return Changes(snapshot={"status": SnapshotStatus.ERROR, "error_message": message})


async def _restore(job: Job) -> None:
    """Restore the machine from the snapshot. A server that was running (CloudVPS restores those) is stopped first
    and started again after, and ends running; else it ends stopped, as it was. `job.stage` is where an earlier
    run got to: each step runs unless a run recorded a later stage."""
    assert job.provider is not None and job.provider_ref is not None and job.snapshot_ref is not None
    restart = bool(job.params.get("restart"))
    if restart and job.stage is None:
        await stop_first(job, 25)
    if job.stage in (None, STOPPED_FIRST):
        await steps.restore_machine(job.provider, job.provider_ref, job.snapshot_ref)
        await steps.progress(job, 50, stage=CALLED)
    if job.stage != RESTARTING:
        await steps.wait_for(job, job.provider_ref, MachineState.STOPPED)
    if not restart:
        await steps.succeed(job, Changes(server={"task_state": None}))
        return
    await start_again(job, 75)


register("snapshot", _snapshot, _snapshot_failed)
register("delete_snapshot", _delete_snapshot, _delete_snapshot_failed)
register("restore", _restore, settle_on_machine)
