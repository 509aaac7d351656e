"""Backups: a server's snapshots as CloudVPS shows them (manual, or automatic on a schedule), each server's
schedule, and the hourly run that takes the automatic ones and keeps the newest few."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import BackupSchedule, Server, Snapshot
from cloudplane.domain.errors import CloudplaneError, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.states import SnapshotStatus
from cloudplane.providers.base import Feature
from cloudplane.services import events, snapshots
from cloudplane.services.accounts import Principal
from cloudplane.services.operations import Accepted
from cloudplane.services.servers import require_capability
from cloudplane.services.tenancy import mine

# A server without a schedule of its own shows this one, off.
DEFAULT_HOUR = 3
DEFAULT_KEEP = 7
MAX_KEEP = 30
AUTOMATIC = "automatic"


@dataclass(frozen=True)
class Schedule:
    server_id: int
    enabled: bool
    hour: int  # UTC
    keep: int
    updated_at: datetime | None  # None: never set, the default shown


def _view(server_id: int, row: BackupSchedule | None) -> Schedule:
    if row is None:
        return Schedule(server_id, enabled=False, hour=DEFAULT_HOUR, keep=DEFAULT_KEEP, updated_at=None)
    return Schedule(server_id, row.enabled, row.hour, row.keep, row.updated_at)


def get_schedule(core: Core, principal: Principal, server_id: int) -> Schedule:
    with core.db.read() as s:
        require_capability(core, s, principal, server_id, Feature.SNAPSHOT)
        row = s.scalar(
            select(BackupSchedule).where(BackupSchedule.server_id == server_id, mine(BackupSchedule, principal))
        )
        return _view(server_id, row)


def set_schedule(
    core: Core,
    principal: Principal,
    server_id: int,
    *,
    enabled: bool | None = None,
    hour: int | None = None,
    keep: int | None = None,
) -> Schedule:
    """Change the server's schedule; what is left out stays as it was (or as the default shows it)."""
    if hour is not None and not 0 <= hour <= 23:
        raise ValidationFailed("hour must be a whole hour of the day in UTC, 0 to 23", field="hour", hour=hour)
    if keep is not None and not 1 <= keep <= MAX_KEEP:
        raise ValidationFailed(
            f"keep must be between 1 and {MAX_KEEP} automatic backups", field="keep", keep=keep, maximum=MAX_KEEP
        )
    with core.db.write() as s:
        # A server whose provider takes no snapshots (a rented GPU instance) can have no backups: 409 here.
        require_capability(core, s, principal, server_id, Feature.SNAPSHOT)
        row = s.get(BackupSchedule, server_id)
        if row is None:
            row = BackupSchedule(
                server_id=server_id,
                account_id=principal.account_id,
                enabled=False,
                hour=DEFAULT_HOUR,
                keep=DEFAULT_KEEP,
            )
            s.add(row)
        if enabled is not None:
            row.enabled = enabled
        if hour is not None:
            row.hour = hour
        if keep is not None:
            row.keep = keep
        s.flush()
        events.record(
            s,
            EventType.VPS_BACKUP_SCHEDULE_CHANGED,
            account_id=principal.account_id,
            target_type="server",
            target_id=server_id,
            data={"enabled": row.enabled, "hour": row.hour, "keep": row.keep},
        )
        return _view(server_id, row)


def remove_schedule(core: Core, principal: Principal, server_id: int) -> Schedule:
    """Take no more automatic backups of the server (those taken stay); its schedule shows the default again."""
    with core.db.write() as s:
        require_capability(core, s, principal, server_id, Feature.SNAPSHOT)
        row = s.get(BackupSchedule, server_id)
        if row is not None:
            s.delete(row)
            events.record(
                s,
                EventType.VPS_BACKUP_SCHEDULE_CHANGED,
                account_id=principal.account_id,
                target_type="server",
                target_id=server_id,
                data={"enabled": False, "removed": True},
            )
    return _view(server_id, None)


def acting_for(account_id: int) -> Principal:
    """The principal of work Cloudplane does for an account on its own (a scheduled backup): the account's
    scope, no user (user id 0 names none)."""
    return Principal(account_id=account_id, user_id=0, role="scheduler")


_DUE = (
    select(BackupSchedule.server_id, BackupSchedule.account_id, BackupSchedule.keep)
    .join(Server, Server.id == BackupSchedule.server_id)
    .where(BackupSchedule.enabled.is_(True), Server.deleted_at.is_(None))
    .order_by(BackupSchedule.server_id)
)


def _older_automatic(session: Session, server_id: int, keep: int) -> list[int]:
    """The server's available automatic backups beyond the newest `keep`, oldest first."""
    ids = session.scalars(
        select(Snapshot.id)
        .where(
            Snapshot.server_id == server_id,
            Snapshot.kind == AUTOMATIC,
            Snapshot.status == SnapshotStatus.AVAILABLE,
            Snapshot.deleted_at.is_(None),
        )
        .order_by(Snapshot.created_at.desc(), Snapshot.id.desc())
        .offset(keep)
    ).all()
    return list(reversed(ids))


def take_due_backups(core: Core, session: Session, tick: datetime) -> tuple[str, list[Accepted]]:
    """The hourly run, in its tick's transaction: for each live server whose schedule is due at this hour, an
    automatic backup, and the oldest automatic ones deleted so that, with the new one, `keep` remain. A server that
    cannot take one now (busy, in error) is skipped, with a `vps.backup.failed` event saying why."""
    due = session.execute(_DUE.where(BackupSchedule.hour == tick.hour)).all()
    started: list[Accepted] = []
    skipped = 0
    label = f"Daily Backup - {tick:%Y-%m-%d}"
    for server_id, account_id, keep in due:
        principal = acting_for(account_id)
        try:
            with session.begin_nested():  # a refusal undoes this server's changes only
                _, op = snapshots.take_snapshot(core, session, principal, server_id, label=label, kind=AUTOMATIC)
                started.append(op)
                for old in _older_automatic(session, server_id, keep - 1):
                    started.append(snapshots.drop_snapshot(core, session, principal, server_id, old)[1])
        except CloudplaneError as refusal:
            skipped += 1
            events.record(
                session,
                EventType.VPS_BACKUP_FAILED,
                account_id=account_id,
                target_type="server",
                target_id=server_id,
                data=_skipped(refusal, tick),
            )
    return f"{len(due) - skipped} backups started, {skipped} skipped", started


def _skipped(refusal: CloudplaneError, tick: datetime) -> dict[str, Any]:
    return {
        "kind": AUTOMATIC,
        "scheduled_for": tick.isoformat(),
        "error": {"code": refusal.code, "message": f"Scheduled backup skipped: {refusal.message}"},
    }
