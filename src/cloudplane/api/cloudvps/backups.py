"""CloudVPS Pro's backup routes (/api/v1/vps/{id}/backups): a VPS's snapshots under that document's names and
shapes (ids "backup-N"; LetsCloud shows the same objects as snapshots), and each VPS's automatic backup schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from cloudplane import context
from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer
from cloudplane.api.cloudvps.vps import Request, VpsActionReply, VpsId, VpsOut, parse_vps_id, vps_out
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.api.common.ids import parse_id
from cloudplane.domain.errors import NotFound
from cloudplane.domain.states import SnapshotStatus
from cloudplane.services import backups, snapshots
from cloudplane.services.backups import Schedule

_NOT_FOUND: Responses = {404: {"model": ErrorEnvelope, "description": "No such VPS or backup in your account"}}
_CONFLICT: Responses = {409: {"model": ErrorEnvelope, "description": "Not possible in the VPS's or backup's state"}}
router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["CloudVPS backups"],
    responses={**errors(400, 401, 403, 422, 429), **_NOT_FOUND},
)

BackupStatus = Literal["creating", "completed", "failed", "deleting"]
# The document's words for a snapshot's status ("completed" for one that can be restored).
_STATUS_WORDS: dict[str, BackupStatus] = {
    SnapshotStatus.CREATING: "creating",
    SnapshotStatus.AVAILABLE: "completed",
    SnapshotStatus.ERROR: "failed",
    SnapshotStatus.DELETING: "deleting",
    SnapshotStatus.DELETED: "deleting",
}
BackupId = Annotated[str, Path(description='The backup id, e.g. "backup-123" (a bare "123" works too)')]


class BackupCreate(Request):
    name: str = Field(min_length=1, max_length=255, pattern=r"\S")
    description: str | None = Field(default=None, max_length=2000)


class BackupOut(BaseModel):
    id: str
    vps_id: str
    name: str
    description: str | None
    size: float = Field(description="In `size_unit`; 0 until the backup is completed")
    size_unit: Literal["GB"] = "GB"
    type: Literal["manual", "automatic"]
    status: BackupStatus
    error_message: str | None
    created_at: datetime
    operation_id: str | None = Field(
        default=None, description="The operation taking the backup, in the reply that started it; null on reads"
    )


class BackupReply(BaseModel):
    success: bool = True
    message: str
    data: BackupOut


class BackupListReply(BaseModel):
    success: bool = True
    data: list[BackupOut]
    pagination: Pagination


class ScheduleIn(Request):
    enabled: bool | None = Field(default=None, description="Take automatic backups (false: none are taken)")
    hour: int | None = Field(default=None, description="The hour of the day (UTC, 0-23) the daily backup is taken")
    keep: int | None = Field(
        default=None, description="How many automatic backups to keep; older ones are deleted (1-30)"
    )


class ScheduleOut(BaseModel):
    vps_id: str
    enabled: bool
    frequency: Literal["daily"] = "daily"
    hour: int = Field(description="UTC")
    keep: int
    updated_at: datetime | None = Field(description="Null while the VPS has the default schedule (off)")


class ScheduleReply(BaseModel):
    success: bool = True
    data: ScheduleOut


def parse_backup_id(value: str) -> int:
    number = parse_id(value.removeprefix("backup-"))
    if number is None:
        raise NotFound("Backup not found", backup_id=value)
    return number


def backup_out(snap: Any, **extra: Any) -> BackupOut:
    return BackupOut(
        id=f"backup-{snap.id}",
        vps_id=f"vps-{snap.server_id}",
        name=snap.label,
        description=snap.description,
        size=float(snap.size_gb or 0),
        type="automatic" if snap.kind == backups.AUTOMATIC else "manual",
        status=_STATUS_WORDS[snap.status],
        error_message=snap.error_message,
        created_at=snap.created_at,
        **extra,
    )


def schedule_out(schedule: Schedule) -> ScheduleOut:
    return ScheduleOut(
        vps_id=f"vps-{schedule.server_id}",
        enabled=schedule.enabled,
        hour=schedule.hour,
        keep=schedule.keep,
        updated_at=schedule.updated_at,
    )


@router.get("/vps/{vps_id}/backups", response_model=BackupListReply)
async def list_backups(
    vps_id: VpsId,
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
) -> Response:
    """The VPS's backups, manual and automatic, oldest first."""
    result = await read(
        core, snapshots.list_snapshots, core, principal, parse_vps_id(vps_id), page=page, per_page=limit
    )
    return reply(
        BackupListReply(data=[backup_out(s) for s in result.items], pagination=Pagination.of(page, limit, result.total))
    )


@router.post("/vps/{vps_id}/backups", status_code=201, response_model=BackupReply, responses=_CONFLICT)
async def create_backup(vps_id: VpsId, body: BackupCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Take a manual backup: it is "creating" at once and "completed" when done (a running VPS keeps running)."""
    snap = await write(
        core,
        snapshots.create_snapshot,
        core,
        principal,
        parse_vps_id(vps_id),
        label=body.name,
        description=body.description,
    )
    data = backup_out(snap, operation_id=context.current().operation_id)
    return reply(BackupReply(message="Backup started", data=data), 201)


@router.post("/vps/{vps_id}/backups/{backup_id}/restore", response_model=VpsActionReply, responses=_CONFLICT)
async def restore_backup(vps_id: VpsId, backup_id: BackupId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Restore the VPS's disk from the backup. A running VPS is stopped, restored and started again; a stopped one
    stays stopped. The reply shows the VPS "restoring"."""
    server = await write(
        core,
        snapshots.restore_snapshot,
        core,
        principal,
        parse_vps_id(vps_id),
        parse_backup_id(backup_id),
        while_running=True,
    )
    return reply(VpsActionReply(message="Backup restore started", data=vps_out(server, datetime.now(UTC), VpsOut)))


@router.get("/vps/{vps_id}/backups/schedule", response_model=ScheduleReply)
async def get_backup_schedule(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    """The VPS's automatic backups: daily at `hour` (UTC), the newest `keep` kept. Off until set."""
    return reply(
        ScheduleReply(data=schedule_out(await read(core, backups.get_schedule, core, principal, parse_vps_id(vps_id))))
    )


@router.put("/vps/{vps_id}/backups/schedule", response_model=ScheduleReply, responses=_CONFLICT)
async def set_backup_schedule(vps_id: VpsId, body: ScheduleIn, core: CoreDep, principal: PrincipalDep) -> Response:
    """Change the schedule; fields left out keep their value."""
    schedule = await write(
        core,
        backups.set_schedule,
        core,
        principal,
        parse_vps_id(vps_id),
        enabled=body.enabled,
        hour=body.hour,
        keep=body.keep,
    )
    return reply(ScheduleReply(data=schedule_out(schedule)))


# Before DELETE /vps/{id}/backups/{backup_id}, which would take "schedule" for a backup id.
@router.delete("/vps/{vps_id}/backups/schedule", response_model=ScheduleReply)
async def delete_backup_schedule(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Remove the VPS's schedule: no more automatic backups (those taken are kept); the default shows again."""
    return reply(
        ScheduleReply(
            data=schedule_out(await write(core, backups.remove_schedule, core, principal, parse_vps_id(vps_id)))
        )
    )


@router.delete("/vps/{vps_id}/backups/{backup_id}", response_model=BackupReply, responses=_CONFLICT)
async def delete_backup(vps_id: VpsId, backup_id: BackupId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Start deleting the backup: the reply shows it "deleting"; it is gone from the list once deleted."""
    snap = await write(
        core, snapshots.delete_snapshot, core, principal, parse_vps_id(vps_id), parse_backup_id(backup_id)
    )
    return reply(BackupReply(message="Backup deletion started", data=backup_out(snap)))
