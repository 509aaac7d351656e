"""Snapshots of a server: create, list, delete and restore, each a durable operation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Row, insert, select, update
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import Snapshot, table_of, utcnow
from cloudplane.domain.errors import InvalidState, NotFound, ValidationFailed
from cloudplane.domain.states import ACTIONS, ServerStatus, SnapshotStatus
from cloudplane.providers.base import Feature
from cloudplane.services import operations
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import counted, paged_window, window
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


def create_snapshot(
    core: Core, principal: Principal, server_id: int, *, label: str, description: str | None = None
) -> Row[Any]:
    label = label.strip()
    if not label:
        raise ValidationFailed("Label must not be empty", field="label")
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
