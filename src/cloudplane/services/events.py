"""The events outbox: `record` writes an event in the caller's transaction, so a change and what it tells the
world commit together; the audit log is read from it, and a webhook event's deliveries are written with it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, String, bindparam, insert, literal, select, true
from sqlalchemy.orm import Session

from cloudplane import context
from cloudplane.db.engine import Database
from cloudplane.db.tables import (
    Event,
    User,
    UTCDateTime,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSubscription,
    table_of,
    utcnow,
)
from cloudplane.domain.errors import Forbidden, ValidationFailed
from cloudplane.domain.events import WEBHOOK_EVENTS, EventType
from cloudplane.domain.times import assume_utc
from cloudplane.services.pages import Page, counted, paged_window, window

if TYPE_CHECKING:  # accounts records events too
    from cloudplane.services.accounts import Principal

_events = table_of(Event)
_INSERT_EVENT = insert(_events)
_WEBHOOK_EVENTS = frozenset(str(t) for t in WEBHOOK_EVENTS)
# One delivery per active endpoint subscribed to the event, in the event's own transaction: a delivery can be lost
# neither between the change and its event nor between the event and its webhooks (services/webhooks.py sends them).
_subscriptions, _endpoints = table_of(WebhookSubscription), table_of(WebhookEndpoint)
_FAN_OUT = insert(table_of(WebhookDelivery)).from_select(
    ["endpoint_id", "event_id", "event_type", "status", "attempts", "next_attempt_at", "created_at"],
    select(
        _subscriptions.c.endpoint_id,
        bindparam("event_id", type_=String),
        _subscriptions.c.event_type,
        literal("pending"),
        literal(0),
        bindparam("now", type_=UTCDateTime),
        bindparam("now", type_=UTCDateTime),
    )
    .join(_endpoints, _endpoints.c.id == _subscriptions.c.endpoint_id)
    .where(_subscriptions.c.event_type == bindparam("event_type", type_=String), _endpoints.c.active == true()),
)


def record(
    session: Session | Connection,
    type: EventType,
    *,
    account_id: int | None,
    target_type: str,
    target_id: int | str,
    data: dict[str, Any] | None = None,
    operation_id: str | None = None,
    actor_user_id: int | None = None,
    request_id: str | None = None,
    client_ip: str | None = None,
) -> None:
    """Add an event to the session's transaction. Who and from where default to the current request's caller
    (none outside a request: a workflow passes what its operation recorded)."""
    ctx = context.current()
    event_id, now = str(uuid.uuid4()), utcnow()
    # A Core insert, run at once: cheaper than the ORM's unit of work, and events are never read back in the
    # transaction that writes them. What they refer to (an account) is flushed already, as its id is known.
    session.execute(
        _INSERT_EVENT,
        {
            "id": event_id,
            "type": str(type),
            "account_id": account_id,
            "actor_user_id": actor_user_id if actor_user_id is not None else ctx.actor_user_id,
            "target_type": target_type,
            "target_id": str(target_id),
            "operation_id": operation_id,
            "request_id": request_id if request_id is not None else ctx.request_id,
            "client_ip": client_ip if client_ip is not None else ctx.client_ip,
            "data": data or {},
            "created_at": now,
        },
    )
    if type in _WEBHOOK_EVENTS:
        session.execute(_FAN_OUT, {"event_id": event_id, "event_type": str(type), "now": now})


@dataclass(frozen=True)
class AuditEntry:
    id: str
    type: str
    account_id: int | None
    actor_user_id: int | None
    actor_email: str | None
    target_type: str
    target_id: str
    operation_id: str | None
    request_id: str | None
    client_ip: str | None
    data: dict[str, Any]
    created_at: datetime


def list_audit_log(
    db: Database,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    action: str | None = None,
    actor_user_id: int | None = None,
    account_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEntry]:
    """Every event, newest first, for admins; filters combine. `action` is an event type or a prefix ending in a
    dot (`vps.` for every server event)."""
    if principal.role != "admin":
        raise Forbidden("The audit log is for administrators")
    # A time without a zone is UTC, as every time this service shows.
    since, until = assume_utc(since), assume_utc(until)
    if since is not None and until is not None and since > until:
        raise ValidationFailed("`start_date` must not be after `end_date`", field="start_date")
    where = []
    if action:
        where.append(Event.type.startswith(action, autoescape=True) if action.endswith(".") else Event.type == action)
    if actor_user_id is not None:
        where.append(Event.actor_user_id == actor_user_id)
    if account_id is not None:
        where.append(Event.account_id == account_id)
    if target_type:
        where.append(Event.target_type == target_type)
    if target_id:
        where.append(Event.target_id == target_id)
    if since is not None:
        where.append(Event.created_at >= since)
    if until is not None:
        where.append(Event.created_at <= until)
    with db.read() as s:
        total = s.scalar(counted(Event.__table__, where)) or 0
        rows = s.execute(
            paged_window(
                select(Event, User.email).outerjoin(User, User.id == Event.actor_user_id),
                Event.seq,
                where,
                [Event.seq.desc()],
                window(total, page, per_page),
            )
        ).all()
    items = [
        AuditEntry(
            id=e.id,
            type=e.type,
            account_id=e.account_id,
            actor_user_id=e.actor_user_id,
            actor_email=email,
            target_type=e.target_type,
            target_id=e.target_id,
            operation_id=e.operation_id,
            request_id=e.request_id,
            client_ip=e.client_ip,
            data=dict(e.data or {}),
            created_at=e.created_at,
        )
        for e, email in rows
    ]
    return Page(items=items, total=total, page=page, per_page=per_page)
