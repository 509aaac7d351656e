"""Snapshots of a server: create, list, delete and restore, each a durable operation; renamed at once; and an
account's snapshots across its servers, by their own ids."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Row, func, insert, select, update
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import Server, Snapshot, table_of, utcnow
from cloudplane.domain.errors import InvalidState, NotFound, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.states import ACTIONS, ServerStatus, SnapshotStatus
from cloudplane.providers.base import Feature
from cloudplane.services import events, operations
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import counted, offset_of, paged_window, window
from cloudplane.services.servers import Page, ServerView, accept_action, claim, require_capability, require_server
from cloudplane.services.tenancy import mine


def _live(principal: Principal, server_id: int) -> tuple[ColumnElement[bool], ...]:
    return (
        mine(Snapshot, principal),
        Snapshot.server_id == server_id,
        Snapshot.deleted_at.is_(None),
    )


def _load(session: Session, principal: Principal, server_id: int, snapshot_id: int) -> Snapshot:
    require_server(session, principal, server_id)
    snap = session.scalar(select(Snapshot).where(Snapshot.id == snapshot_id, *_live(principal, server_id)))
    if snap is None:
        raise NotFound("Snapshot not found", server_id=server_id, snapshot_id=snapshot_id)
    return snap


def list_snapshots(core: Core, principal: Principal, server_id: int, *, page: int, per_page: int) -> Page:
    with core.db.read() as s:
        require_server(s, principal, server_id)
        live = _live(principal, server_id)
        total = s.scalar(counted(Snapshot.__table__, live)) or 0
        items = s.scalars(
            paged_window(select(Snapshot), Snapshot.id, live, [Snapshot.id], window(total, page, per_page))
        ).all()
    return Page(items=items, total=total, page=page, per_page=per_page)


def get_snapshot(core: Core, principal: Principal, server_id: int, snapshot_id: int) -> Snapshot:
    with core.db.read() as s:
        return _load(s, principal, server_id, snapshot_id)


_INSERT_SNAPSHOT = insert(table_of(Snapshot)).returning(*table_of(Snapshot).c)


def _label(label: str) -> str:
    label = label.strip()
    if not label:
        raise ValidationFailed("Label must not be empty", field="label")
    return label


def create_snapshot(
    core: Core, principal: Principal, server_id: int, *, label: str, description: str | None = None
) -> Row[Any]:
    label = _label(label)
    with core.db.write() as s:
        snap, op = take_snapshot(core, s, principal, server_id, label=label, description=description)
    operations.launch(op)
    return snap  # as made: the workflow may change the row right after the commit


def take_snapshot(
    core: Core,
    session: Session,
    principal: Principal,
    server_id: int,
    *,
    label: str,
    description: str | None = None,
    kind: str = "manual",
) -> tuple[Row[Any], operations.Accepted]:
    """In the caller's transaction: claim the server for a snapshot (`kind` manual, or automatic for a scheduled
    backup) and record the snapshot and its operation, to launch once the transaction commits."""
    claim(core, session, principal, server_id, ACTIONS["snapshot"])
    conn = session.connection()  # Core statements: a burst of snapshots is a hot path
    snap = conn.execute(
        _INSERT_SNAPSHOT,
        {
            "account_id": principal.account_id,
            "server_id": server_id,
            "label": label,
            "description": description,
            "kind": kind,
            "status": SnapshotStatus.CREATING,
            "created_at": utcnow(),
        },
    ).one()
    op = operations.new_operation(
        conn, account_id=principal.account_id, kind="snapshot", server_id=server_id, snapshot_id=snap.id
    )
    return snap, op


def delete_snapshot(core: Core, principal: Principal, server_id: int, snapshot_id: int) -> Snapshot:
    """Start deleting the snapshot; it as marked (deleting)."""
    with core.db.write() as s:
        snap, op = drop_snapshot(core, s, principal, server_id, snapshot_id)
    operations.launch(op)
    return snap


def drop_snapshot(
    core: Core, session: Session, principal: Principal, server_id: int, snapshot_id: int
) -> tuple[Snapshot, operations.Accepted]:
    """In the caller's transaction: mark an available (or failed) snapshot deleting and record the operation that
    deletes it, to launch once the transaction commits."""
    snap = _load(session, principal, server_id, snapshot_id)
    require_capability(core, session, principal, server_id, Feature.DELETE_SNAPSHOT)
    result = session.execute(
        update(Snapshot)
        .where(
            Snapshot.id == snapshot_id,
            Snapshot.status.in_([SnapshotStatus.AVAILABLE, SnapshotStatus.ERROR]),
        )
        .values(status=SnapshotStatus.DELETING)
    )
    # An UPDATE returns a CursorResult; Session.execute is typed as returning the base Result.
    if cast(CursorResult[Any], result).rowcount != 1:
        raise InvalidState(
            f"Snapshot is {snap.status}; only an available or failed snapshot can be deleted.",
            snapshot_id=snapshot_id,
            status=snap.status,
        )
    snap.status = SnapshotStatus.DELETING  # as the UPDATE left the row (the object is not read again)
    op = operations.new_operation(
        session, account_id=principal.account_id, kind="delete_snapshot", server_id=server_id, snapshot_id=snapshot_id
    )
    return snap, op


# CloudVPS restores a running VPS from a backup by stopping it first and starting it again after; LetsCloud's
# restore is documented to refuse (409) unless the server is stopped.
_RESTORE_WHILE_RUNNING = replace(
    ACTIONS["restore"], allowed_from=frozenset({ServerStatus.RUNNING, ServerStatus.STOPPED})
)


def restore_snapshot(
    core: Core, principal: Principal, server_id: int, snapshot_id: int, *, while_running: bool = False
) -> ServerView:
    """Restore the server from one of its snapshots. `while_running`: a running server is stopped first and
    started again once restored (else it must be stopped)."""
    with core.db.write() as s:
        snap = _load(s, principal, server_id, snapshot_id)
        if snap.status != SnapshotStatus.AVAILABLE:
            raise InvalidState(
                f"Snapshot is {snap.status}; only an available snapshot can be restored.",
                snapshot_id=snapshot_id,
                status=snap.status,
            )
        action = _RESTORE_WHILE_RUNNING if while_running else ACTIONS["restore"]
        server = accept_action(core, s, principal, server_id, action)
        op = operations.new_operation(
            s,
            account_id=principal.account_id,
            kind="restore",
            server_id=server_id,
            snapshot_id=snapshot_id,
            params={"restart": True} if server.status == ServerStatus.RUNNING else None,
        )
    operations.launch(op)
    return replace(server, operation_id=op.id)


@dataclass(frozen=True)
class SnapshotView:
    """A snapshot with what it is a snapshot of: its server's catalog image and location (slugs; None for a server
    rented from a marketplace, which has neither)."""

    id: int
    server_id: int
    label: str
    description: str | None
    kind: str
    status: str
    size_gb: int | None
    created_at: datetime
    image: str | None
    location: str | None


_ACCOUNT_SNAPSHOTS = select(Snapshot, Server.image_id, Server.location_id).join(Server, Server.id == Snapshot.server_id)


def _account_live(principal: Principal) -> tuple[ColumnElement[bool], ...]:
    return (mine(Snapshot, principal), Snapshot.deleted_at.is_(None), Server.deleted_at.is_(None))


def _views(core: Core, rows: Any) -> list[SnapshotView]:
    catalog = core.catalog.view()
    return [
        SnapshotView(
            id=snap.id,
            server_id=snap.server_id,
            label=snap.label,
            description=snap.description,
            kind=snap.kind,
            status=snap.status,
            size_gb=snap.size_gb,
            created_at=snap.created_at,
            image=catalog.image(image_id).slug if image_id is not None else None,
            location=catalog.location(location_id).slug if location_id is not None else None,
        )
        for snap, image_id, location_id in rows
    ]


def list_account_snapshots(core: Core, principal: Principal, *, page: int, per_page: int) -> Page:
    """A page of the caller's live snapshots of every live server, oldest first."""
    live = _account_live(principal)
    with core.db.read() as s:
        total = s.scalar(select(func.count()).select_from(Snapshot).join(Server).where(*live)) or 0
        rows = s.execute(
            _ACCOUNT_SNAPSHOTS.where(*live).order_by(Snapshot.id).limit(per_page).offset(offset_of(page, per_page))
        ).all()
        items = _views(core, rows)
    return Page(items=items, total=total, page=page, per_page=per_page)


def _account_snapshot(core: Core, session: Session, principal: Principal, snapshot_id: int) -> SnapshotView:
    row = session.execute(_ACCOUNT_SNAPSHOTS.where(Snapshot.id == snapshot_id, *_account_live(principal))).first()
    if row is None:
        raise NotFound("Snapshot not found", snapshot_id=snapshot_id)
    return _views(core, [row])[0]


def get_account_snapshot(core: Core, principal: Principal, snapshot_id: int) -> SnapshotView:
    """The caller's live snapshot with this id, whichever of its servers it is of."""
    with core.db.read() as s:
        return _account_snapshot(core, s, principal, snapshot_id)


def snapshot_server(core: Core, principal: Principal, server_id: int, *, label: str) -> SnapshotView:
    """`create_snapshot`, answered as a SnapshotView of the snapshot as made (read in the transaction that makes
    it: the workflow may change the row right after the commit)."""
    label = _label(label)
    with core.db.write() as s:
        snap, op = take_snapshot(core, s, principal, server_id, label=label)
        view = _account_snapshot(core, s, principal, snap.id)
    operations.launch(op)
    return view


def rename_snapshot(core: Core, principal: Principal, snapshot_id: int, label: str) -> SnapshotView:
    """Change the snapshot's label at once (nothing at the provider holds it), with its event."""
    label = _label(label)
    with core.db.write() as s:
        before = _account_snapshot(core, s, principal, snapshot_id)
        s.execute(update(Snapshot).where(Snapshot.id == snapshot_id).values(label=label))
        events.record(
            s,
            EventType.VPS_BACKUP_RENAMED,
            account_id=principal.account_id,
            target_type="snapshot",
            target_id=snapshot_id,
            data={"server_id": before.server_id, "label": label, "previous_label": before.label},
        )
    return replace(before, label=label)


def delete_account_snapshot(core: Core, principal: Principal, snapshot_id: int) -> Snapshot:
    """`delete_snapshot` for the caller's snapshot with this id, whichever of its servers it is of."""
    server_id = get_account_snapshot(core, principal, snapshot_id).server_id
    return delete_snapshot(core, principal, server_id, snapshot_id)
