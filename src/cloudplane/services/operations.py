"""Operations: the durable record of every long action, and handing them to the workflow engine."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudplane.db.engine import Database
from cloudplane.db.tables import Operation
from cloudplane.domain.errors import NotFound
from cloudplane.services.accounts import Principal

UNFINISHED = ("pending", "running")


def new_operation(
    session: Session,
    *,
    account_id: int,
    kind: str,
    server_id: int | None = None,
    snapshot_id: int | None = None,
    params: dict[str, Any] | None = None,
) -> Operation:
    """Record an operation in the caller's transaction, so the change and its operation commit together."""
    op = Operation(
        id=str(uuid.uuid4()),
        account_id=account_id,
        kind=kind,
        server_id=server_id,
        snapshot_id=snapshot_id,
        status="pending",
        params=json.dumps(params) if params else None,
    )
    session.add(op)
    return op


def launch(op_id: str) -> None:
    """Start the operation's workflow after its transaction committed. If the process dies before this runs,
    `resume_unfinished` starts it on the next boot; starting twice is harmless (the workflow id is the op id)."""
    from cloudplane.workflows.engine import start_operation

    start_operation(op_id)


def get_operation(db: Database, principal: Principal, op_id: str) -> Operation:
    with db.read() as s:
        op = s.scalar(select(Operation).where(Operation.id == op_id, Operation.account_id == principal.account_id))
    if op is None:
        raise NotFound("Operation not found", operation_id=op_id)
    return op


def unfinished_operation_ids(db: Database) -> list[str]:
    with db.read() as s:
        return list(
            s.scalars(select(Operation.id).where(Operation.status.in_(UNFINISHED)).order_by(Operation.created_at))
        )
