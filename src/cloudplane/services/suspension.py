"""Suspension: an administrator freezes a server, or every server of a user, and its owner can change nothing until
it is lifted.

A suspension is a flag beside the status (`servers.suspended_at`): the status keeps the power state the server goes
back to. Setting the flag refuses the owner's actions at once (services/servers.py `claim`); freezing the machine, and
thawing it when the suspension is lifted, are durable operations of kinds `suspend` and `resume`
(workflows/servers.py). A server busy with an action when it is suspended is frozen once that action ends.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, case, exists, func, literal, select, update

from cloudplane.core import Core
from cloudplane.db.tables import Operation, Server, table_of, utcnow
from cloudplane.domain.errors import InvalidState, NotFound
from cloudplane.domain.states import ServerStatus, TaskState
from cloudplane.providers.base import Feature
from cloudplane.services import operations, users
from cloudplane.services.accounts import Principal
from cloudplane.services.servers import ServerView, require_feature_of, server_views

# The statuses a suspension's operation can act on at once: a server being created is frozen once it runs.
SETTLED = (ServerStatus.RUNNING, ServerStatus.STOPPED, ServerStatus.ERROR)

_servers, _operations = table_of(Server), table_of(Operation)
_LIVE = _servers.c.deleted_at.is_(None)
# An operation that has not ended holds the server (a suspension still being carried out, an owner's action).
_BUSY = exists().where(_operations.c.server_id == _servers.c.id, _operations.c.status.in_(operations.UNFINISHED))
_SERVER = select(_servers).where(_servers.c.id == bindparam("server_id"), _LIVE)
_IDLE = and_(_servers.c.task_state.is_(None), _servers.c.status.in_([s.value for s in SETTLED]))
# Flag the server (its owner is refused from now on) and, when nothing else holds it, claim it for the freeze; a busy
# server's operation claims it once its task ends.
_SUSPEND = (
    update(_servers)
    .where(_LIVE, _servers.c.suspended_at.is_(None))
    .values(
        suspended_at=bindparam("now"),
        task_state=case((_IDLE, literal(TaskState.SUSPENDING.value)), else_=_servers.c.task_state),
        updated_at=bindparam("now"),
    )
    .returning(*_servers.c)
)
_RESUME = (
    update(_servers)
    .where(_LIVE, _servers.c.suspended_at.isnot(None), _servers.c.task_state.is_(None), ~_BUSY)
    .values(task_state=TaskState.RESUMING.value, updated_at=bindparam("now"))
    .returning(*_servers.c)
)
_BUSY_SUSPENDED = select(func.count()).where(
    _servers.c.account_id == bindparam("of_account"), _LIVE, _servers.c.suspended_at.isnot(None), _BUSY
)


def _server(conn: Connection, server_id: int) -> Row[Any]:
    row = conn.execute(_SERVER, {"server_id": server_id}).first()
    if row is None:
        raise NotFound("Server not found", server_id=server_id)
    return row


def _accepted(core: Core, conn: Connection, row: Row[Any], kind: str) -> tuple[ServerView, operations.Accepted]:
    op = operations.new_operation(conn, account_id=row.account_id, kind=kind, server_id=row.id)
    return server_views(conn, [row], core.catalog.view())[0], op


def suspend_server(core: Core, principal: Principal, server_id: int) -> ServerView:
    """Suspend any tenant's server (admins only): its owner is refused from now on, and its machine is frozen if it
    runs. 409 if it is suspended already or its provider cannot freeze machines."""
    users.require_admin(principal)
    with core.db.write() as s:
        conn = s.connection()
        row = _server(conn, server_id)
        if row.suspended_at is not None:
            raise InvalidState("Server is suspended already", server_id=server_id, status="suspended")
        require_feature_of(core, row.provider, Feature.SUSPEND, server_id)
        claimed = conn.execute(_SUSPEND.where(_servers.c.id == server_id), {"now": utcnow()}).first()
        if claimed is None:  # another admin's suspension, or a delete, committed since the read
            raise InvalidState("Server is suspended already, or gone", server_id=server_id)
        view, op = _accepted(core, conn, claimed, "suspend")
    operations.launch(op)
    return replace(view, operation_id=op.id)


def unsuspend_server(core: Core, principal: Principal, server_id: int) -> ServerView:
    """Lift a server's suspension (admins only): a server that was running runs again, a stopped one stays stopped.
    409 if it is not suspended, or its suspension is still being carried out."""
    users.require_admin(principal)
    with core.db.write() as s:
        conn = s.connection()
        row = _server(conn, server_id)
        if row.suspended_at is None:
            raise InvalidState("Server is not suspended", server_id=server_id, status=row.status)
        require_feature_of(core, row.provider, Feature.RESUME, server_id)
        claimed = conn.execute(_RESUME.where(_servers.c.id == server_id), {"now": utcnow()}).first()
        if claimed is None:
            raise InvalidState(
                "Server is still busy (its suspension is being carried out); try again when it is done",
                server_id=server_id,
                task_state=row.task_state,
            )
        view, op = _accepted(core, conn, claimed, "resume")
    operations.launch(op)
    return replace(view, operation_id=op.id)


def suspend_account_servers(conn: Connection, account_id: int) -> list[operations.Accepted]:
    """In the caller's transaction: suspend every live server of the account not suspended yet, each with its
    operation (launch them after the commit). A provider that cannot freeze its machines fails its operation with
    its reason; the server stays suspended."""
    rows = conn.execute(_SUSPEND.where(_servers.c.account_id == account_id), {"now": utcnow()}).all()
    return [operations.new_operation(conn, account_id=account_id, kind="suspend", server_id=r.id) for r in rows]


def unsuspend_account_servers(conn: Connection, account_id: int) -> list[operations.Accepted]:
    """In the caller's transaction: lift the suspension of every server of the account, each with its operation
    (launch them after the commit). Refused, changing nothing, while any of them is still busy."""
    busy = conn.execute(_BUSY_SUSPENDED, {"of_account": account_id}).scalar_one()
    if busy:
        raise InvalidState(
            f"{busy} of the user's servers are still being suspended or busy; try again when they are done",
            busy_servers=busy,
        )
    rows = conn.execute(_RESUME.where(_servers.c.account_id == account_id), {"now": utcnow()}).all()
    return [operations.new_operation(conn, account_id=account_id, kind="resume", server_id=r.id) for r in rows]
