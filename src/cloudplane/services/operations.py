"""Operations: the durable record of every long action, readable by their owners, and handed to the workflow
engine after their transaction commits.

Intent first: a request writes its state claim, its Operation and its Events in one transaction, then hands the
operation to the engine. The Operation is recorded `running` under this process's executor when its engine has
room (it runs it at once, without a claim), else `pending`. Starting may fail or never happen (a crash); the
dispatcher's sweeps start what is pending, run again what a process holds but does not run, and take over what a
dead process held, so the request never answers 500 for it and a retry never repeats it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from cloudplane import context
from cloudplane.db.engine import Database
from cloudplane.db.tables import Operation, table_of, utcnow
from cloudplane.domain.errors import NotFound, ValidationFailed
from cloudplane.domain.events import OPERATION_EVENTS
from cloudplane.services import events
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import Page, counted, paged_window, window
from cloudplane.services.tenancy import mine

UNFINISHED = ("pending", "running")
STATUSES = ("pending", "running", "succeeded", "failed")


@dataclass(frozen=True)
class Target:
    """What an operation acts on, by its core id: ("server", "12"), ("snapshot", "5"), ("deployment", uuid)."""

    type: str
    id: str


def target_of(server_id: int | None, snapshot_id: int | None) -> Target:
    if snapshot_id is not None:
        return Target("snapshot", str(snapshot_id))
    if server_id is not None:
        return Target("server", str(server_id))
    raise ValueError("an operation needs a target")


@dataclass(frozen=True)
class Accepted:
    """An operation a request recorded, to hand to the engine once its transaction commits; `held`: recorded as
    running under this process's executor, which runs it without claiming it."""

    id: str
    kind: str
    held: bool = False


@dataclass(frozen=True)
class _Facts:
    """What an accepted operation's row and its event share."""

    id: str
    kind: str
    account_id: int
    target_type: str
    target_id: str
    server_id: int | None
    actor_user_id: int | None
    request_id: str | None
    client_ip: str | None


_operations = table_of(Operation)
_INSERT_OPERATION = insert(_operations)


def new_operation(
    session: Session | Connection,
    *,
    account_id: int,
    kind: str,
    server_id: int | None = None,
    snapshot_id: int | None = None,
    target: Target | None = None,
    params: dict[str, Any] | None = None,
) -> Accepted:
    """Record an operation and its `accepted` event in the caller's transaction, so the change, its operation
    and what it tells the world commit together. Call `launch` after the commit."""
    from cloudplane.workflows.engine import holder

    target = target or target_of(server_id, snapshot_id)
    ctx = context.current()
    now = utcnow()
    # This process's engine takes it at once when it has room: recorded as running under its executor, it needs no
    # claim. Else it is pending, for whichever process's dispatcher starts it first.
    executor_id = holder()
    facts = _Facts(
        id=str(uuid.uuid4()),
        kind=kind,
        account_id=account_id,
        target_type=target.type,
        target_id=target.id,
        server_id=server_id,
        actor_user_id=ctx.actor_user_id,
        request_id=ctx.request_id,
        client_ip=ctx.client_ip,
    )
    session.execute(
        _INSERT_OPERATION,
        {
            **vars(facts),
            "snapshot_id": snapshot_id,
            "params": params or None,
            "created_at": now,
            "updated_at": now,
            **(
                {"status": "pending", "progress": 0, "attempts": 0}
                if executor_id is None
                else {"status": "running", "progress": 5, "attempts": 1, "executor_id": executor_id, "started_at": now}
            ),
        },
    )
    record_event(session, facts, "accepted")
    context.bind(operation_id=facts.id)
    return Accepted(facts.id, kind, held=executor_id is not None)


class OperationFacts(Protocol):
    """What an operation's events say of it: the Operation row, or the workflow's Job read from it."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def account_id(self) -> int: ...
    @property
    def target_type(self) -> str: ...
    @property
    def target_id(self) -> str: ...
    @property
    def server_id(self) -> int | None: ...
    @property
    def actor_user_id(self) -> int | None: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def client_ip(self) -> str | None: ...


def record_event(
    session: Session | Connection, op: OperationFacts, stage: Literal["accepted", "succeeded", "failed"], **data: Any
) -> None:
    """Write the operation's event of `stage` (its kind's vocabulary in domain/events.py) in the caller's
    transaction, with who asked, from where and in which request."""
    kind_events = OPERATION_EVENTS.get(op.kind)
    if kind_events is None:
        return
    events.record(
        session,
        getattr(kind_events, stage),
        account_id=op.account_id,
        target_type=op.target_type,
        target_id=op.target_id,
        operation_id=op.id,
        actor_user_id=op.actor_user_id,
        request_id=op.request_id,
        client_ip=op.client_ip,
        data={"kind": op.kind, **({"server_id": op.server_id} if op.server_id is not None else {}), **data},
    )


def launch(op: Accepted) -> None:
    """Hand the committed operation to the workflow engine. Never raises: if the hand-off fails, the operation
    stays as recorded, pending or held by this process, and the dispatcher's sweep starts it (every process sweeps
    every few seconds)."""
    from cloudplane.workflows.dispatcher import hand_off

    hand_off(op.id, op.kind, held=op.held)


@dataclass(frozen=True)
class OperationView:
    """An operation as its owner reads it."""

    id: str
    kind: str
    status: str
    progress: int
    target_type: str
    target_id: str
    server_id: int | None
    snapshot_id: int | None
    error_code: str | None
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def view(op: Operation) -> OperationView:
    return OperationView(
        id=op.id,
        kind=op.kind,
        status=op.status,
        progress=op.progress,
        target_type=op.target_type,
        target_id=op.target_id,
        server_id=op.server_id,
        snapshot_id=op.snapshot_id,
        error_code=op.error_code,
        error_message=op.error,
        created_at=op.created_at,
        started_at=op.started_at,
        finished_at=op.finished_at,
    )


def get_operation(db: Database, principal: Principal, op_id: str) -> OperationView:
    """The caller's operation; another account's is as unknown as one that never existed."""
    with db.read() as s:
        op = s.scalar(select(Operation).where(Operation.id == op_id, mine(Operation, principal)))
        if op is None:
            raise NotFound("Operation not found", operation_id=op_id)
        return view(op)


def list_operations(
    db: Database,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    status: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
) -> Page[OperationView]:
    """The caller's operations, newest first; filtered by status and by target."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"Unknown status {status!r}; one of {', '.join(STATUSES)}", field="status")
    where = [mine(Operation, principal)]
    if status is not None:
        where.append(Operation.status == status)
    if target_type is not None:
        where.append(Operation.target_type == target_type)
    if target_id is not None:
        where.append(Operation.target_id == target_id)
    order = (Operation.created_at.desc(), Operation.id.desc())
    with db.read() as s:
        total = s.scalar(counted(Operation.__table__, where)) or 0
        ops = s.scalars(
            paged_window(select(Operation), Operation.id, where, order, window(total, page, per_page))
        ).all()
        return Page(items=[view(op) for op in ops], total=total, page=page, per_page=per_page)
