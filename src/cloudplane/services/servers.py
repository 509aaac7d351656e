"""Servers: create, read, and the lifecycle actions, each claimed by one conditional UPDATE; and ServerView,
the one view of a server every face renames."""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Row,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import (
    SERVER_STATE_WORD,
    Image,
    Location,
    Plan,
    Server,
    ServerSSHKey,
    Snapshot,
    SSHKey,
    table_of,
    utcnow,
)
from cloudplane.domain.errors import BadRequest, InvalidState, NotFound, Suspended, ValidationFailed
from cloudplane.domain.pricing import CURRENCY, monthly_from_hourly, transfer_allowance_gb
from cloudplane.domain.states import ACTIONS, SUSPENDED_REASON, Action, ServerStatus, refusal_reason
from cloudplane.domain.status_words import StatusWords, status_words
from cloudplane.providers.base import ACTION_FEATURES, Feature, require_feature
from cloudplane.services import operations
from cloudplane.services.accounts import Principal
from cloudplane.services.catalog import CatalogView
from cloudplane.services.pages import Page, counted, paged, window
from cloudplane.services.passwords import check_root_password, generate_root_password, shadow_hash
from cloudplane.services.ssh_keys import keys_named, parse_public_keys, register_keys
from cloudplane.services.tenancy import MINE, mine, tenant

__all__ = ["Page", "ServerView", "Specs", "Prices", "Gpu"]

HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class Specs:
    cpu: int | None
    ram_gb: Decimal | None
    disk_gb: Decimal | None
    # Monthly transfer included; None for a rented GPU instance, which meters none.
    bandwidth_gb: int | None


@dataclass(frozen=True, slots=True)
class Prices:
    monthly: Decimal
    # Rented GPU instances bill by the hour (their monthly price is derived from it); catalog plans by the month.
    hourly: Decimal | None
    currency: str


@dataclass(frozen=True, slots=True)
class Gpu:
    model: str
    count: int


@dataclass(frozen=True, slots=True)
class ServerView:
    """A server as every face shows it; a face only renames these fields.

    A catalog server has its `plan`, `image` and `location`; a GPU instance rented from a marketplace has none of
    them, but its `region`, `offer_id`, `gpu` and the provider's own `details` (ssh host, image reference...)."""

    id: int
    account_id: int
    label: str
    hostname: str
    status: str
    task_state: str | None
    words: StatusWords
    provider: str
    provider_ref: str | None
    plan: Plan | None
    image: Image | None
    location: Location | None
    # The catalog image's name, or the image reference a rented instance runs.
    image_name: str
    region: str | None
    specs: Specs
    prices: Prices
    ipv4: str | None
    private_ipv4: str | None
    gpu: Gpu | None
    offer_id: str | None
    details: Mapping[str, Any]
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    # When an administrator suspended it (None: not suspended); `status` keeps the power state it returns to.
    suspended_at: datetime | None
    ssh_keys: tuple[Row[Any], ...]
    snapshots: tuple[Row[Any], ...]
    # The operation carrying the action this reply accepted (a create, start, stop...); None on reads.
    operation_id: str | None = None

    @property
    def state(self) -> str:
        """The current-state word (see `current_state`)."""
        return self.words.state


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


def _owned(principal: Principal, server_id: int) -> tuple[ColumnElement[bool], ...]:
    return (Server.id == server_id, mine(Server, principal), Server.deleted_at.is_(None))


# Reads are the hot path (every list and get), so they use prebuilt Core statements, not ORM loading:
# three small queries per request whatever the page size, about five times cheaper than selectinload.
_servers, _keys, _links, _snapshots = (table_of(t) for t in (Server, SSHKey, ServerSSHKey, Snapshot))
_LIVE = (MINE(_servers), _servers.c.deleted_at.is_(None))
_ONE_SERVER = select(_servers).where(_servers.c.id == bindparam("server_id"), *_LIVE)
_INSERT_SERVER = insert(table_of(Server)).returning(*_servers.c)


# A page's keys and snapshots, each server's in id order. Ordered by server first, as their indexes are: ordered by
# id alone, SQLite would rather walk the whole table in id order than sort a page's few rows.
def _keys_of(server_ids: ColumnElement[bool]) -> Select[Any]:
    return (
        select(_links.c.server_id, _keys)
        .join(_keys, _keys.c.id == _links.c.ssh_key_id)
        .where(server_ids)
        .order_by(_links.c.server_id, _links.c.ssh_key_id)
    )


def _snapshots_of(server_ids: ColumnElement[bool]) -> Select[Any]:
    return (
        select(_snapshots)
        .where(server_ids, _snapshots.c.deleted_at.is_(None))
        .order_by(_snapshots.c.server_id, _snapshots.c.id)
    )


_KEYS_OF = _keys_of(_links.c.server_id.in_(bindparam("ids", expanding=True)))
_SNAPSHOTS_OF = _snapshots_of(_snapshots.c.server_id.in_(bindparam("ids", expanding=True)))
# The same for one server (getServer, each action's reply): an expanding IN is rendered again at every execution,
# which costs a one-row read more than its query does (bench/bench_asgi.py).
_KEYS_OF_ONE = _keys_of(_links.c.server_id == bindparam("id"))
_SNAPSHOTS_OF_ONE = _snapshots_of(_snapshots.c.server_id == bindparam("id"))


_NO_DETAILS: Mapping[str, Any] = MappingProxyType({})
# What a catalog plan gives (specs and prices) is the same for every server on it: made once per plan row, for as
# long as the catalog keeps that row.
_plan_terms: weakref.WeakKeyDictionary[Plan, tuple[Specs, Prices]] = weakref.WeakKeyDictionary()


def plan_terms(plan: Plan) -> tuple[Specs, Prices]:
    """The specs and prices of a catalog plan: monthly, no hourly price."""
    terms = _plan_terms.get(plan)
    if terms is None:
        specs = Specs(
            cpu=plan.cpu,
            ram_gb=Decimal(plan.ram_mb) / 1024,  # exact: a power of two
            disk_gb=Decimal(plan.disk_gb),
            bandwidth_gb=transfer_allowance_gb(plan.ram_mb),
        )
        terms = _plan_terms[plan] = (specs, Prices(monthly=Decimal(plan.price_monthly), hourly=None, currency=CURRENCY))
    return terms


# The columns of `select(servers)` in table order, unpacked at once: cheaper than ~25 attribute reads of a Row,
# and this runs for every server of every list. The assert keeps the two in step.
_COLUMNS = (
    "id account_id label hostname status task_state provider provider_ref plan_id image_id location_id ipv4 "
    "private_ipv4 error_message created_at updated_at deleted_at gpu_model gpu_count cpu_count ram_gb storage_gb "
    "price_per_hour region offer_id provider_data suspended_at"
).split()
assert [c.name for c in Server.__table__.c] == _COLUMNS, "_view must unpack the servers table as it is"


def _view(r: Row[Any], catalog: CatalogView, keys: tuple[Row[Any], ...], snaps: tuple[Row[Any], ...]) -> ServerView:
    (
        id_,
        account_id,
        label,
        hostname,
        status,
        task_state,
        provider,
        provider_ref,
        plan_id,
        image_id,
        location_id,
        ipv4,
        private_ipv4,
        error_message,
        created_at,
        updated_at,
        _deleted_at,
        gpu_model,
        gpu_count,
        cpu_count,
        ram_gb,
        storage_gb,
        price_per_hour,
        region,
        offer_id,
        provider_data,
        suspended_at,
    ) = cast(tuple[Any, ...], r)  # a Row is a tuple of the columns; its generic type does not say how many
    details = provider_data or _NO_DETAILS
    plan: Plan | None
    image: Image | None
    location: Location | None
    if plan_id is not None:
        plan, image, location = catalog.plan(plan_id), catalog.image(image_id), catalog.location(location_id)
        specs, prices = plan_terms(plan)
        image_name = image.name
    else:  # rented from a GPU marketplace: what was rented is on the server itself
        plan = image = location = None
        specs = Specs(cpu=cpu_count, ram_gb=ram_gb, disk_gb=storage_gb, bandwidth_gb=None)
        hourly = Decimal(price_per_hour or 0)
        prices = Prices(monthly=monthly_from_hourly(hourly), hourly=hourly, currency=CURRENCY)
        image_name = str(details.get("image") or "unknown")
    # Positional, in field order.
    return ServerView(
        id_,
        account_id,
        label,
        hostname,
        status,
        task_state,
        status_words(status, task_state, suspended_at is not None),
        provider,
        provider_ref,
        plan,
        image,
        location,
        image_name,
        region,
        specs,
        prices,
        ipv4,
        private_ipv4,
        Gpu(model=gpu_model, count=gpu_count or 1) if gpu_model else None,
        offer_id,
        details,
        error_message,
        created_at,
        updated_at,
        suspended_at,
        keys,
        snaps,
    )


def server_views(conn: Connection | Session, rows: Sequence[Row[Any]], catalog: CatalogView) -> list[ServerView]:
    """The views of these server rows (as `select(servers)` reads them), with their SSH keys and live snapshots:
    two more queries whatever the number of rows."""
    if not rows:
        return []
    if len(rows) == 1:
        one = {"id": rows[0].id}
        return [
            _view(rows[0], catalog, tuple(conn.execute(_KEYS_OF_ONE, one)), tuple(conn.execute(_SNAPSHOTS_OF_ONE, one)))
        ]
    ids = [r.id for r in rows]
    keys: dict[int, list[Row[Any]]] = {i: [] for i in ids}
    snaps: dict[int, list[Row[Any]]] = {i: [] for i in ids}
    for k in conn.execute(_KEYS_OF, {"ids": ids}):
        keys[k.server_id].append(k)
    for sn in conn.execute(_SNAPSHOTS_OF, {"ids": ids}):
        snaps[sn.server_id].append(sn)
    return [_view(r, catalog, tuple(keys[r.id]), tuple(snaps[r.id])) for r in rows]


def require_server(conn: Connection | Session, principal: Principal, server_id: int) -> None:
    """404 unless the caller owns a live server with this id."""
    if conn.execute(_ONE_SERVER, {"server_id": server_id, **tenant(principal)}).first() is None:
        raise NotFound("Server not found", server_id=server_id)


def get_server_in(core: Core, conn: Connection | Session, principal: Principal, server_id: int) -> ServerView:
    """The caller's server as this connection or transaction sees it."""
    row = conn.execute(_ONE_SERVER, {"server_id": server_id, **tenant(principal)}).first()
    if row is None:
        raise NotFound("Server not found", server_id=server_id)
    return server_views(conn, [row], core.catalog.view())[0]


def get_server(core: Core, principal: Principal, server_id: int) -> ServerView:
    with core.db.connect() as conn:
        return get_server_in(core, conn, principal, server_id)


# Names sort case-insensitively, the same on SQLite and PostgreSQL; ties fall back to the creation time, then the id.
# Each order (and each with the state filter) has an index of its own in db/tables.py.
_SORT_KEYS: dict[str, tuple[ColumnElement[Any], ...]] = {
    "id": (),
    "created_at": (_servers.c.created_at,),
    "label": (func.lower(_servers.c.label),),
    "state": (SERVER_STATE_WORD, _servers.c.created_at),
}


def current_state(status: str, task_state: str | None) -> str:
    """The word `list_servers(state=...)` filters on: the visible task while one runs, else the status."""
    return status_words(status, task_state).state


@functools.cache
def _list_statements(
    filtered: bool, sort: str, descending: bool, from_end: bool = False
) -> tuple[Select[Any], Select[Any]]:
    """A page of servers (found from the list's start, or its end: `pages.window`) and their count, prebuilt once
    per shape a list can ask for."""
    where = [*_LIVE, SERVER_STATE_WORD == bindparam("state")] if filtered else list(_LIVE)
    keys = (*_SORT_KEYS[sort], _servers.c.id)
    order = [k.desc() for k in keys] if descending else list(keys)
    page = paged(
        select(_servers),
        _servers.c.id,
        where,
        order,
        limit=bindparam("limit"),
        offset=bindparam("offset"),
        from_end=from_end,
    )
    return page, counted(_servers, where)


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
    `sort` ("id", "created_at", "label" or "state"), ties by creation time, then id."""
    if sort not in _SORT_KEYS:
        raise ValidationFailed(f"Cannot sort by {sort!r}; sort by one of {', '.join(_SORT_KEYS)}", field="sort")
    _, count_query = _list_statements(state is not None, sort, descending)
    params: dict[str, Any] = {**tenant(principal)}
    if state is not None:
        params["state"] = state
    with core.db.connect() as conn:
        total = conn.execute(count_query, params).scalar_one()
        at = window(total, page, per_page)
        page_query, _ = _list_statements(state is not None, sort, descending, at.from_end)
        rows = conn.execute(page_query, {**params, "limit": at.limit, "offset": at.offset}).all()
        items = server_views(conn, rows, core.catalog.view())
    return Page(items=items, total=total, page=page, per_page=per_page)


def rename_server(core: Core, principal: Principal, server_id: int, label: str) -> ServerView:
    """Change the server's label (its name); the hostname stays as it is, as it would on a running machine."""
    label = label.strip()
    if not label:
        raise ValidationFailed("Label must not be empty", field="label")
    with core.db.write() as s:
        result = s.execute(update(Server).where(*_owned(principal, server_id)).values(label=label, updated_at=utcnow()))
    # An UPDATE returns a CursorResult; Session.execute is typed as returning the base Result.
    if cast(CursorResult[Any], result).rowcount != 1:
        raise NotFound("Server not found", server_id=server_id)
    return get_server(core, principal, server_id)


def create_server(
    core: Core,
    principal: Principal,
    *,
    label: str,
    plan: str,
    image: str,
    location: str,
    hostname: str | None = None,
    password: str | None = None,
    ssh_key_ids: Sequence[int] = (),
    ssh_key_names: Sequence[str] = (),
    public_keys: Sequence[str] = (),
) -> tuple[ServerView, str | None]:
    """Record the server and its create operation in one transaction; returns the server (with the operation's
    id) and the generated root password, if any (a `password` given must pass `check_root_password`).

    `plan`, `image` and `location` are catalog slugs. The server gets the keys `ssh_key_ids` names (the caller's
    own), those `ssh_key_names` names (each a key's id or title, see `ssh_keys.keys_named`) and `public_keys`
    (OpenSSH lines: each one the account holds is reused, another added), so a create that is refused leaves no
    key behind."""
    label = label.strip()
    if not label:
        raise ValidationFailed("Label must not be empty", field="label")
    view = core.catalog.view()
    found: dict[str, Location | Plan | Image] = {}
    for kind, slug in (("plan", plan), ("image", image), ("location", location)):
        entry = view.by_slug(kind, slug)
        if entry is None or not entry.available:
            raise BadRequest(
                f"{kind.capitalize()} {slug!r} not found; list {kind}s for the available slugs",
                field=kind,
                message=f"{kind.capitalize()} not found",
            )
        found[kind] = entry
    # by_slug(kind, ...) returns a row of that kind.
    location_row, plan_row, image_row = (
        cast(Location, found["location"]),
        cast(Plan, found["plan"]),
        cast(Image, found["image"]),
    )
    view.check_placement(location_row, plan_row, image_row)
    hostname = validate_hostname(hostname) if hostname else hostname_from_label(label)
    generated = None
    if password is None:
        password = generated = generate_root_password()
    else:
        check_root_password(password)
    parsed_keys = parse_public_keys(public_keys, field="ssh_keys")
    # Slow by design (crypt rounds), so outside the write transaction; it lets go of the GIL while it works.
    password_hash = shadow_hash(password, generated=generated is not None)

    def record() -> tuple[Row[Any], tuple[Row[Any], ...], operations.Accepted]:
        with core.db.write() as s:
            key_ids = list(dict.fromkeys(ssh_key_ids))
            if key_ids:
                owned = set(s.scalars(select(SSHKey.id).where(mine(SSHKey, principal), SSHKey.id.in_(key_ids))))
                missing = [k for k in key_ids if k not in owned]
                if missing:
                    raise NotFound("SSH key not found", field="ssh_keys", ssh_key_ids=missing)
            named = keys_named(s, principal, ssh_key_names, field="ssh_keys")
            key_ids = list(dict.fromkeys([*key_ids, *named, *register_keys(s, principal.account_id, parsed_keys)]))
            now = utcnow()
            # Core statements on the session's connection, not the ORM's unit of work: this is the hot path of a
            # burst of creates, and the inserted row comes back to make the reply's view without reading it again.
            conn = s.connection()
            row = conn.execute(
                _INSERT_SERVER,
                {
                    "account_id": principal.account_id,
                    "label": label,
                    "hostname": hostname,
                    "status": ServerStatus.CREATING,
                    "provider": location_row.provider,
                    "plan_id": plan_row.id,
                    "image_id": image_row.id,
                    "location_id": location_row.id,
                    "created_at": now,
                    "updated_at": now,
                },
            ).one()
            keys: tuple[Row[Any], ...] = ()
            if key_ids:
                conn.execute(insert(_links), [{"server_id": row.id, "ssh_key_id": k} for k in key_ids])
                keys = tuple(conn.execute(_KEYS_OF_ONE, {"id": row.id}))
            op = operations.new_operation(
                conn,
                account_id=principal.account_id,
                kind="create",
                server_id=row.id,
                params={"root_password_hash": password_hash},
            )
        return row, keys, op

    try:
        row, keys, op = record()
    except IntegrityError:
        if not parsed_keys:
            raise
        # A concurrent request added one of these keys first; it is there to reuse now.
        row, keys, op = record()
    operations.launch(op)
    return replace(_view(row, view, keys, ()), operation_id=op.id), generated


_CLAIM = (
    update(_servers)
    .where(
        _servers.c.id == bindparam("server_id"),
        *_LIVE,
        _servers.c.status.in_(bindparam("allowed", expanding=True)),
        _servers.c.task_state.is_(None),
        _servers.c.suspended_at.is_(None),
    )
    .values(task_state=bindparam("task"), updated_at=bindparam("now"))
    .returning(*_servers.c)
)
_STATE_OF = select(_servers.c.status, _servers.c.task_state, _servers.c.provider, _servers.c.suspended_at).where(
    _servers.c.id == bindparam("server_id"), *_LIVE
)


def claim(core: Core, session: Session, principal: Principal, server_id: int, action: Action) -> Row[Any]:
    """Move the server into the action's task state if, and only if, its provider can do the action and its table
    allows it now and no administrator suspended it; the server's row as claimed (as `select(servers)` reads it). A
    refusal changes nothing and says why: a suspension first, then what the provider cannot do, then what the state
    does not allow."""
    params = {"server_id": server_id, **tenant(principal)}
    claimed = session.execute(
        _CLAIM,
        {**params, "allowed": [s.value for s in action.allowed_from], "task": action.task_state, "now": utcnow()},
    ).first()
    if claimed is not None:
        # Checked after the claim, in its transaction: a refusal raises, and the claim is rolled back with it.
        require_feature_of(core, claimed.provider, ACTION_FEATURES[action.name], server_id)
        return claimed
    row = session.execute(_STATE_OF, params).first()
    if row is None:
        raise NotFound("Server not found", server_id=server_id)
    refuse_if_suspended(row.suspended_at, server_id)
    require_feature_of(core, row.provider, ACTION_FEATURES[action.name], server_id)
    raise InvalidState(
        refusal_reason(action, row.status, row.task_state),
        server_id=server_id,
        status=row.status,
        task_state=row.task_state,
    )


def refuse_if_suspended(suspended_at: datetime | None, server_id: int) -> None:
    """The owner's request for a server an administrator suspended: refused, whatever it asks."""
    if suspended_at is not None:
        raise Suspended(SUSPENDED_REASON, server_id=server_id, status="suspended")


def require_feature_of(core: Core, provider: str, feature: Feature, server_id: int) -> None:
    require_feature(core.providers.get(provider), feature, subject=f"{provider} servers", server_id=server_id)


def require_capability(core: Core, session: Session, principal: Principal, server_id: int, feature: Feature) -> None:
    """Refuse, before anything changes, an action on a suspended server or one the server's provider cannot do (a
    rented GPU instance has no snapshots), saying why."""
    row = session.execute(_STATE_OF, {"server_id": server_id, **tenant(principal)}).first()
    if row is None:
        raise NotFound("Server not found", server_id=server_id)
    refuse_if_suspended(row.suspended_at, server_id)
    require_feature_of(core, row.provider, feature, server_id)


def accept_action(core: Core, session: Session, principal: Principal, server_id: int, action: Action) -> ServerView:
    """In the caller's transaction: claim the server for the action (its provider able to do it), and its view as
    claimed (what the reply shows; read before the commit, as the workflow may change it right after)."""
    return server_views(session, [claim(core, session, principal, server_id, action)], core.catalog.view())[0]


def server_action(core: Core, principal: Principal, server_id: int, action_name: str) -> ServerView:
    """start, stop, reboot or delete: claim the server, record the operation, start its workflow."""
    action = ACTIONS[action_name]
    with core.db.write() as s:
        server = accept_action(core, s, principal, server_id, action)
        op = operations.new_operation(s, account_id=principal.account_id, kind=action.name, server_id=server_id)
    operations.launch(op)
    return replace(server, operation_id=op.id)


# Not from error: a failed create leaves no machine to re-image.
_REBUILD = ACTIONS["rebuild"]


def rebuild_server(
    core: Core,
    principal: Principal,
    server_id: int,
    *,
    image: str | None = None,
    public_keys: Sequence[str] | None = None,
) -> tuple[ServerView, str]:
    """Re-image the server's disk: from the catalog image `image` (a slug; None: the image it has), with the keys
    `public_keys` (OpenSSH lines, each added to the account unless it holds it already; None: the keys it has) and
    a new root password, returned with the server as accepted (rebuilding). A running server is stopped, rebuilt and
    started again; a stopped one stays stopped. Its snapshots stay.

    The new image and keys are the server's from this transaction on (every face shows them at once); the password
    reaches the provider only as a hash, in the operation's params, which end with the operation."""
    view = core.catalog.view()
    image_row = None
    if image is not None:
        found = view.by_slug("image", image)
        if found is None or not found.available:
            available = [i.slug for i in view.images if i.available]
            raise ValidationFailed(
                f"Image {image!r} not found; choose one of: {', '.join(available) or 'none'}",
                field="image",
                choices=available,
            )
        image_row = cast(Image, found)
    parsed_keys = None if public_keys is None else parse_public_keys(public_keys, field="ssh_keys")
    password = generate_root_password()
    # Slow by design (crypt rounds), so outside the write transaction.
    password_hash = shadow_hash(password, generated=True)

    def record() -> tuple[ServerView, operations.Accepted]:
        with core.db.write() as s:
            claimed = claim(core, s, principal, server_id, _REBUILD)
            changes: dict[str, Any] = {"updated_at": utcnow()}
            if image_row is not None and image_row.id != claimed.image_id:
                location = view.location(claimed.location_id)
                capabilities = view.capabilities.get(location.provider)
                if capabilities is not None and not capabilities.boots(image_row.slug):
                    offered = [i.slug for i in view.images_at(location)]
                    raise ValidationFailed(
                        f"Image {image_row.slug!r} is not offered in {location.slug}; choose one of: "
                        f"{', '.join(offered) or 'none'}",
                        field="image",
                        choices=offered,
                    )
                changes["image_id"] = image_row.id
            s.execute(update(Server).where(Server.id == server_id).values(**changes))
            if parsed_keys is not None:
                key_ids = register_keys(s, principal.account_id, parsed_keys)
                s.execute(delete(ServerSSHKey).where(ServerSSHKey.server_id == server_id))
                if key_ids:
                    s.execute(insert(_links), [{"server_id": server_id, "ssh_key_id": k} for k in key_ids])
            op = operations.new_operation(
                s,
                account_id=principal.account_id,
                kind="rebuild",
                server_id=server_id,
                params={
                    "root_password_hash": password_hash,
                    "restart": claimed.status == ServerStatus.RUNNING,
                },
            )
            # As this transaction leaves it: the new image and keys, rebuilding.
            return get_server_in(core, s, principal, server_id), op

    try:
        server, op = record()
    except IntegrityError:
        if not parsed_keys:
            raise
        # A concurrent request added one of these keys first; it is there to reuse now.
        server, op = record()
    operations.launch(op)
    return replace(server, operation_id=op.id), password


_RESET_PASSWORD = ACTIONS["reset_password"]


def reset_root_password(core: Core, principal: Principal, server_id: int, password: str) -> ServerView:
    """Give root of the running server's system the password its owner chose (see `check_root_password`): the
    server claimed, and an operation that sets it inside the machine; the server as accepted. The password reaches
    the provider only as a hash, in the operation's params, which end with the operation."""
    check_root_password(password)
    # Slow by design (crypt rounds), so outside the write transaction.
    password_hash = shadow_hash(password)
    with core.db.write() as s:
        server = accept_action(core, s, principal, server_id, _RESET_PASSWORD)
        op = operations.new_operation(
            s,
            account_id=principal.account_id,
            kind="reset_password",
            server_id=server_id,
            params={"root_password_hash": password_hash},
        )
    operations.launch(op)
    return replace(server, operation_id=op.id)
