"""Servers: create, read, and the lifecycle actions, each claimed by one conditional UPDATE."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from cloudplane.core import Core
from cloudplane.db.tables import Server, ServerSSHKey, SSHKey, utcnow
from cloudplane.domain.errors import BadRequest, InvalidState, NotFound, ValidationFailed
from cloudplane.domain.states import ACTIONS, Action, ServerStatus, refusal_reason
from cloudplane.services import operations
from cloudplane.services.accounts import Principal
from cloudplane.services.passwords import generate_root_password, shadow_hash

HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Page:
    items: Sequence[Server]
    total: int
    page: int
    per_page: int


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


def _with_relations(query):  # type: ignore[no-untyped-def]
    return query.options(selectinload(Server.ssh_keys), selectinload(Server.snapshots))


def _owned(account_id: int, server_id: int):  # type: ignore[no-untyped-def]
    return (Server.id == server_id, Server.account_id == account_id, Server.deleted_at.is_(None))


def load_server(session: Session, principal: Principal, server_id: int) -> Server:
    server = session.scalar(_with_relations(select(Server).where(*_owned(principal.account_id, server_id))))
    if server is None:
        raise NotFound("Server not found", server_id=server_id)
    return server


def get_server(core: Core, principal: Principal, server_id: int) -> Server:
    with core.db.read() as s:
        return load_server(s, principal, server_id)


def list_servers(core: Core, principal: Principal, *, page: int, per_page: int) -> Page:
    live = (Server.account_id == principal.account_id, Server.deleted_at.is_(None))
    with core.db.read() as s:
        total = s.scalar(select(func.count()).select_from(Server).where(*live)) or 0
        items = s.scalars(
            _with_relations(select(Server).where(*live).order_by(Server.id).offset((page - 1) * per_page).limit(per_page))
        ).all()
    return Page(items=items, total=total, page=page, per_page=per_page)


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
) -> tuple[Server, str | None]:
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
    hostname = validate_hostname(hostname) if hostname else hostname_from_label(label)
    generated = None
    if password is None:
        password = generated = generate_root_password()
    elif not 8 <= len(password) <= 128:
        raise ValidationFailed("Password must be 8 to 128 characters long", field="password")
    key_ids = list(dict.fromkeys(ssh_key_ids))

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
            params={"root_password_hash": shadow_hash(password)},
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
    row = session.execute(select(Server.status, Server.task_state).where(*_owned(principal.account_id, server_id))).first()
    if row is None:
        raise NotFound("Server not found", server_id=server_id)
    raise InvalidState(
        refusal_reason(action, row.status, row.task_state),
        server_id=server_id,
        status=row.status,
        task_state=row.task_state,
    )


def server_action(core: Core, principal: Principal, server_id: int, action_name: str) -> Server:
    """start, stop, reboot or delete: claim the server, record the operation, start its workflow."""
    action = ACTIONS[action_name]
    with core.db.write() as s:
        claim(s, principal, server_id, action)
        op = operations.new_operation(s, account_id=principal.account_id, kind=action.name, server_id=server_id)
    operations.launch(op.id)
    return get_server(core, principal, server_id)
