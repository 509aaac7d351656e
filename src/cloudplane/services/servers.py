"""Servers: create, read, and the lifecycle actions, each claimed by one conditional UPDATE."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import Server, ServerSSHKey, Snapshot, SSHKey, utcnow
from cloudplane.domain.errors import BadRequest, InvalidState, NotFound, ValidationFailed
from cloudplane.domain.states import ACTIONS, Action, ServerStatus, TaskState, refusal_reason
from cloudplane.services import operations
from cloudplane.services.accounts import Principal
from cloudplane.services.passwords import generate_root_password, shadow_hash

HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]
    total: int
    page: int
    per_page: int


@dataclass(frozen=True)
class ServerView:
    """A server as read for a reply: its row plus the SSH keys and live snapshots it carries."""

    id: int
    account_id: int
    label: str
    hostname: str
    status: str
    task_state: str | None
    provider: str
    provider_ref: str | None
    plan_id: int | None
    image_id: int | None
    location_id: int | None
    ipv4: str | None
    private_ipv4: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    gpu_model: str | None
    gpu_count: int | None
    cpu_count: int | None
    ram_gb: Decimal | None
    storage_gb: Decimal | None
    price_per_hour: Decimal | None
    region: str | None
    offer_id: str | None
    provider_data: str | None
    ssh_keys: tuple[Row[Any], ...]
    snapshots: tuple[Row[Any], ...]


def validate_hostname(hostname: str) -> str:
    name = hostname.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not all(HOSTNAME_LABEL.match(part) for part in name.split(".")):
        raise ValidationFailed(
            "Hostname must be letters, digits and hyphens in dot-separated labels of 1-63 characters, "
            "not starting or ending with a hyphen.",
            field="hostname",
        )
    return name


def hostname_from_label(label: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:63].strip("-")
    return slug or "server"


def _owned(account_id: int, server_id: int):  # type: ignore[no-untyped-def]
    return (Server.id == server_id, Server.account_id == account_id, Server.deleted_at.is_(None))


# Reads are the hot path (every list and get), so they use prebuilt Core statements, not ORM loading:
# three small queries per request whatever the page size, about five times cheaper than selectinload.
_servers, _keys, _links, _snapshots = (t.__table__ for t in (Server, SSHKey, ServerSSHKey, Snapshot))
_LIVE = (_servers.c.account_id == bindparam("account_id"), _servers.c.deleted_at.is_(None))
_ONE_SERVER = select(_servers).where(_servers.c.id == bindparam("server_id"), *_LIVE)
_SERVER_PAGE = (
    select(_servers).where(*_LIVE).order_by(_servers.c.id).limit(bindparam("limit")).offset(bindparam("offset"))
)
_SERVER_COUNT = select(func.count()).select_from(_servers).where(*_LIVE)
_KEYS_OF = (
    select(_links.c.server_id, _keys)
    .join(_keys, _keys.c.id == _links.c.ssh_key_id)
    .where(_links.c.server_id.in_(bindparam("ids", expanding=True)))
    .order_by(_keys.c.id)
)
_SNAPSHOTS_OF = (
    select(_snapshots)
    .where(_snapshots.c.server_id.in_(bindparam("ids", expanding=True)), _snapshots.c.deleted_at.is_(None))
    .order_by(_snapshots.c.id)
)


assert [c.name for c in _servers.c] == [f.name for f in fields(ServerView)][:-2], "ServerView must mirror servers"


def server_views(conn: Connection, rows: Sequence[Row[Any]]) -> list[ServerView]:
    if not rows:
        return []
    ids = [r.id for r in rows]
    keys: dict[int, list[Row[Any]]] = {i: [] for i in ids}
    snaps: dict[int, list[Row[Any]]] = {i: [] for i in ids}
    for k in conn.execute(_KEYS_OF, {"ids": ids}):
        keys[k.server_id].append(k)
    for sn in conn.execute(_SNAPSHOTS_OF, {"ids": ids}):
        snaps[sn.server_id].append(sn)
    # Positional: the columns come in table order, which the module checks matches ServerView's fields.
    return [ServerView(*r, ssh_keys=tuple(keys[r.id]), snapshots=tuple(snaps[r.id])) for r in rows]


def require_server(conn: Connection | Session, principal: Principal, server_id: int) -> None:
    """404 unless the caller owns a live server with this id."""
    if conn.execute(_ONE_SERVER, {"server_id": server_id, "account_id": principal.account_id}).first() is None:
        raise NotFound("Server not found", server_id=server_id)


def get_server(core: Core, principal: Principal, server_id: int) -> ServerView:
    with core.db.connect() as conn:
        row = conn.execute(_ONE_SERVER, {"server_id": server_id, "account_id": principal.account_id}).first()
        if row is None:
            raise NotFound("Server not found", server_id=server_id)
        return server_views(conn, [row])[0]


# What a server is doing, in one word: the task of a running action, else its status. A snapshot leaves the
# server as it was (running or stopped), so "snapshotting" does not show.
VISIBLE_TASKS = frozenset(
    {TaskState.STARTING, TaskState.STOPPING, TaskState.REBOOTING, TaskState.RESTORING, TaskState.DELETING}
)
_CURRENT_STATE = case(
    (_servers.c.task_state.in_(sorted(t.value for t in VISIBLE_TASKS)), _servers.c.task_state),
    else_=_servers.c.status,
)
# Names sort case-insensitively, the same on SQLite and PostgreSQL; ties always fall back to the id.
_SORT_KEYS = {
    "id": _servers.c.id,
    "created_at": _servers.c.created_at,
    "label": func.lower(_servers.c.label),
    "state": _CURRENT_STATE,
}


def current_state(status: str, task_state: str | None) -> str:
    """The word `list_servers(state=...)` filters on: the visible task while one runs, else the status."""
    return task_state if task_state in VISIBLE_TASKS else status


def list_servers(
    core: Core,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    state: str | None = None,
    sort: str = "id",
    descending: bool = False,
) -> Page:
    """A page of the caller's live servers, only those in `state` (see `current_state`) if given, ordered by
    `sort` ("id", "created_at", "label" or "state"), ties by id."""
    if sort not in _SORT_KEYS:
        raise ValidationFailed(f"Cannot sort by {sort!r}; sort by one of {', '.join(_SORT_KEYS)}", field="sort")
    params = {"account_id": principal.account_id, "limit": per_page, "offset": (page - 1) * per_page}
    if state is None and sort == "id" and not descending:
        page_query, count_query = _SERVER_PAGE, _SERVER_COUNT
    else:
        where = [*_LIVE, _CURRENT_STATE == bindparam("state")] if state is not None else list(_LIVE)
        key, tie = _SORT_KEYS[sort], _servers.c.id
        order = (key.desc(), tie.desc()) if descending else (key, tie)
        page_query = (
            select(_servers).where(*where).order_by(*order).limit(bindparam("limit")).offset(bindparam("offset"))
        )
        count_query = select(func.count()).select_from(_servers).where(*where)
        params["state"] = state
    with core.db.connect() as conn:
        total = conn.execute(count_query, params).scalar_one()
        items = server_views(conn, conn.execute(page_query, params).all())
    return Page(items=items, total=total, page=page, per_page=per_page)


def rename_server(core: Core, principal: Principal, server_id: int, label: str) -> ServerView:
    """Change the server's label (its name); the hostname stays as it is, as it would on a running machine."""
    label = label.strip()
    if not label:
        raise ValidationFailed("Label must not be empty", field="label")
    with core.db.write() as s:
        result = s.execute(
            update(Server).where(*_owned(principal.account_id, server_id)).values(label=label, updated_at=utcnow())
        )
    if result.rowcount != 1:
        raise NotFound("Server not found", server_id=server_id)
    return get_server(core, principal, server_id)


def create_server(
    core: Core,
    principal: Principal,
    *,
    label: str,
    plan_slug: str,
    image_slug: str,
    location_slug: str,
    hostname: str | None = None,
    password: str | None = None,
    ssh_key_ids: Sequence[int] = (),
) -> tuple[ServerView, str | None]:
    """Record the server and its create operation; returns the server and the generated root password, if any."""
    label = label.strip()
    if not label:
        raise ValidationFailed("Label must not be empty", field="label")
    view = core.catalog.view()
    found = {}
    for kind, slug in (("plan", plan_slug), ("image", image_slug), ("location", location_slug)):
        row = view.by_slug(kind, slug)
        if row is None or not row.available:
            raise BadRequest(
                f"{kind.capitalize()} {slug!r} not found; list {kind}s for the available slugs",
                field=f"{kind}_slug",
                message=f"{kind.capitalize()} not found",
            )
        found[kind] = row
    view.check_placement(found["location"], found["plan"], found["image"])
    hostname = validate_hostname(hostname) if hostname else hostname_from_label(label)
    generated = None
    if password is None:
        password = generated = generate_root_password()
    elif not 8 <= len(password) <= 128:
        raise ValidationFailed("Password must be 8 to 128 characters long", field="password")
    key_ids = list(dict.fromkeys(ssh_key_ids))
    password_hash = shadow_hash(password)  # deliberately slow (crypt rounds): outside the write transaction

    with core.db.write() as s:
        if key_ids:
            owned = set(
                s.scalars(select(SSHKey.id).where(SSHKey.account_id == principal.account_id, SSHKey.id.in_(key_ids)))
            )
            missing = [k for k in key_ids if k not in owned]
            if missing:
                raise NotFound("SSH key not found", field="ssh_keys", ssh_key_ids=missing)
        server = Server(
            account_id=principal.account_id,
            label=label,
            hostname=hostname,
            status=ServerStatus.CREATING,
            provider=found["location"].provider,
            plan_id=found["plan"].id,
            image_id=found["image"].id,
            location_id=found["location"].id,
        )
        s.add(server)
        s.flush()
        s.add_all(ServerSSHKey(server_id=server.id, ssh_key_id=k) for k in key_ids)
        op = operations.new_operation(
            s,
            account_id=principal.account_id,
            kind="create",
            server_id=server.id,
            params={"root_password_hash": password_hash},
        )
    operations.launch(op.id)
    return get_server(core, principal, server.id), generated


def claim(session: Session, principal: Principal, server_id: int, action: Action) -> None:
    """Move the server into the action's task state if, and only if, its table allows it now."""
    result = session.execute(
        update(Server)
        .where(
            *_owned(principal.account_id, server_id),
            Server.status.in_([s.value for s in action.allowed_from]),
            Server.task_state.is_(None),
        )
        .values(task_state=action.task_state, updated_at=utcnow())
    )
    if result.rowcount == 1:
        return
    row = session.execute(
        select(Server.status, Server.task_state).where(*_owned(principal.account_id, server_id))
    ).first()
    if row is None:
        raise NotFound("Server not found", server_id=server_id)
    raise InvalidState(
        refusal_reason(action, row.status, row.task_state),
        server_id=server_id,
        status=row.status,
        task_state=row.task_state,
    )


def require_capability(core: Core, session: Session, principal: Principal, server_id: int, operation: str) -> None:
    """Refuse, before anything changes, an action the server's provider cannot do (a rented GPU instance has no
    snapshots), saying why."""
    provider = session.scalar(select(Server.provider).where(*_owned(principal.account_id, server_id)))
    if provider is None:
        raise NotFound("Server not found", server_id=server_id)
    capabilities = core.providers.get(provider).capabilities
    if not capabilities.supports(operation):
        raise InvalidState(
            f"{provider} servers cannot {operation}: {capabilities.unsupported[operation]}",
            server_id=server_id,
            provider=provider,
        )


def server_action(core: Core, principal: Principal, server_id: int, action_name: str) -> ServerView:
    """start, stop, reboot or delete: claim the server, record the operation, start its workflow."""
    action = ACTIONS[action_name]
    with core.db.write() as s:
        require_capability(core, s, principal, server_id, action.name)
        claim(s, principal, server_id, action)
        op = operations.new_operation(s, account_id=principal.account_id, kind=action.name, server_id=server_id)
    operations.launch(op.id)
    return get_server(core, principal, server_id)
