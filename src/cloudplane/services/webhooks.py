"""Signed webhooks: the endpoints administrators keep (each with its events and a secret shown once), their delivery
logs and redelivery, the payload and its signatures. Sending is workflows/webhooks.py's.

A delivery is written with its event (services/events.py), so none is lost between a change and its webhook. Every
delivery carries two signatures over the raw body: `X-Webhook-Signature`, the hex HMAC-SHA256 that the CloudVPS
document's `verifyWebhookSignature` checks, keyed with the secret as shown; and Standard Webhooks' `webhook-id`,
`webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed with the
base64-decoded part of the secret after `whsec_`), which lets a receiver refuse replays.

Secrets are kept sealed (AES-GCM under a key derived from the service's secret key: CLOUDPLANE_SECRET_KEY, or the
one the service made and keeps in its database), as signing needs them back; they are shown only in the reply that
made or rotated them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from cloudplane import __version__
from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.db.engine import Database
from cloudplane.db.tables import (
    WEBHOOK_DUE_STATUSES,
    Event,
    Plan,
    Server,
    Snapshot,
    User,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSubscription,
    table_of,
    utcnow,
)
from cloudplane.domain.errors import NotFound, ValidationFailed
from cloudplane.domain.events import WEBHOOK_EVENTS, EventType
from cloudplane.services import events, outbound
from cloudplane.services.accounts import Principal
from cloudplane.services.auth import signing_key
from cloudplane.services.pages import Page, counted, paged_window, window
from cloudplane.services.users import require_admin

SIGNATURE_HEADER = "X-Webhook-Signature"
EVENT_HEADER = "X-Webhook-Event"
SECRET_PREFIX = "whsec_"
EVENT_NAMES: tuple[str, ...] = tuple(str(t) for t in WEBHOOK_EVENTS)
DELIVERY_STATUSES = ("pending", "failed", "delivered", "dead")


def new_secret() -> str:
    """A signing secret in Standard Webhooks' form: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


_sealers: dict[str, AESGCM] = {}


def sealer(db: Database) -> AESGCM:
    """The AEAD that seals the secrets (made on first use: call it before opening a transaction, as it may write
    the service's key on first start)."""
    aead = _sealers.get(db.url)
    if aead is None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cloudplane webhook secrets v1").derive(
            signing_key(db).encode()
        )
        aead = _sealers[db.url] = AESGCM(key)
    return aead


def _bound_to(endpoint_id: int) -> bytes:
    # A sealed secret opens only on its own endpoint's row.
    return f"webhook_endpoint:{endpoint_id}".encode()


def seal(aead: AESGCM, endpoint_id: int, secret: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + aead.encrypt(nonce, secret.encode(), _bound_to(endpoint_id))


def unseal(aead: AESGCM, endpoint_id: int, sealed: bytes) -> str:
    return aead.decrypt(sealed[:12], sealed[12:], _bound_to(endpoint_id)).decode()


def signature_hex(secret: str, body: bytes) -> str:
    """The CloudVPS document's signature: hex HMAC-SHA256 of the raw body, keyed with the secret's text."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks' `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`, keyed with
    the secret's bytes (base64 after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, event_type: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"Cloudplane-Webhooks/{__version__}",
        SIGNATURE_HEADER: signature_hex(secret, body),
        EVENT_HEADER: event_type,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secret, message_id, timestamp, body),
    }


@dataclass(frozen=True)
class EndpointView:
    id: int
    url: str
    description: str | None
    active: bool
    events: list[str]
    secret_rotated_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DeliveryView:
    id: int
    endpoint_id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    body: str | None


def _events_of(session: Session, endpoint_ids: Sequence[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {i: [] for i in endpoint_ids}
    rows = session.execute(
        select(WebhookSubscription.endpoint_id, WebhookSubscription.event_type).where(
            WebhookSubscription.endpoint_id.in_(endpoint_ids)
        )
    )
    for endpoint_id, event_type in rows:
        found[endpoint_id].append(event_type)
    # In the document's order.
    return {i: sorted(types, key=EVENT_NAMES.index) for i, types in found.items()}


def _view(endpoint: WebhookEndpoint, event_types: list[str]) -> EndpointView:
    return EndpointView(
        id=endpoint.id,
        url=endpoint.url,
        description=endpoint.description,
        active=endpoint.active,
        events=event_types,
        secret_rotated_at=endpoint.secret_rotated_at,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _delivery_view(d: WebhookDelivery) -> DeliveryView:
    due = d.status in WEBHOOK_DUE_STATUSES
    return DeliveryView(
        id=d.id,
        endpoint_id=d.endpoint_id,
        event_id=d.event_id,
        event_type=d.event_type,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if due else None,
        last_attempt_at=d.last_attempt_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        created_at=d.created_at,
        body=d.body,
    )


def checked_events(names: Sequence[str] | None) -> list[str]:
    """The events to subscribe to, each one of the document's; None: all of them."""
    if names is None:
        return list(EVENT_NAMES)
    unknown = [n for n in names if n not in EVENT_NAMES]
    if unknown:
        raise ValidationFailed(
            f"Unknown webhook event {unknown[0]!r}; the events are: {', '.join(EVENT_NAMES)}", field="events"
        )
    if not names:
        raise ValidationFailed("Subscribe to at least one event (or leave `events` out for all)", field="events")
    return sorted(set(names), key=EVENT_NAMES.index)


def _checked_url(settings: Settings, url: str) -> str:
    # Resolved now too: a URL that points inside is refused when saved, not only at delivery.
    outbound.resolve(url, allow_private=settings.webhooks_allow_private)
    return url


def _load(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("Webhook not found", webhook_id=endpoint_id)
    return endpoint


def _subscribe(session: Session, endpoint_id: int, names: list[str]) -> None:
    session.execute(delete(WebhookSubscription).where(WebhookSubscription.endpoint_id == endpoint_id))
    session.execute(
        insert(table_of(WebhookSubscription)), [{"endpoint_id": endpoint_id, "event_type": n} for n in names]
    )


def _audit(session: Session, principal: Principal, type: EventType, endpoint_id: int, **data: Any) -> None:
    events.record(
        session, type, account_id=principal.account_id, target_type="webhook", target_id=endpoint_id, data=data
    )


def create_endpoint(
    core: Core,
    principal: Principal,
    *,
    url: str,
    event_names: Sequence[str] | None = None,
    description: str | None = None,
    active: bool = True,
) -> tuple[EndpointView, str]:
    """A new endpoint and its secret, which is never shown again."""
    require_admin(principal)
    names = checked_events(event_names)
    _checked_url(core.settings, url)
    secret, aead = new_secret(), sealer(core.db)
    with core.db.write() as s:
        endpoint = WebhookEndpoint(url=url, description=description, active=active, secret_sealed=b"")
        s.add(endpoint)
        s.flush()
        endpoint.secret_sealed = seal(aead, endpoint.id, secret)
        _subscribe(s, endpoint.id, names)
        _audit(s, principal, EventType.WEBHOOK_CREATED, endpoint.id, url=url, events=names)
        s.flush()
        return _view(endpoint, names), secret


def list_endpoints(core: Core, principal: Principal, *, page: int, per_page: int) -> Page[EndpointView]:
    require_admin(principal)
    with core.db.read() as s:
        total = s.scalar(counted(WebhookEndpoint.__table__, [])) or 0
        rows = s.scalars(
            paged_window(
                select(WebhookEndpoint),
                WebhookEndpoint.id,
                [],
                [WebhookEndpoint.id.desc()],
                window(total, page, per_page),
            )
        ).all()
        subscribed = _events_of(s, [e.id for e in rows])
        return Page([_view(e, subscribed[e.id]) for e in rows], total=total, page=page, per_page=per_page)


def get_endpoint(core: Core, principal: Principal, endpoint_id: int) -> EndpointView:
    require_admin(principal)
    with core.db.read() as s:
        endpoint = _load(s, endpoint_id)
        return _view(endpoint, _events_of(s, [endpoint_id])[endpoint_id])


def update_endpoint(
    core: Core,
    principal: Principal,
    endpoint_id: int,
    *,
    url: str | None = None,
    event_names: Sequence[str] | None = None,
    description: str | None = None,
    active: bool | None = None,
) -> EndpointView:
    """Change what is given. Deliveries already written keep going to the endpoint, at its new URL; a paused one
    (`active` false) gets no new deliveries and sends none until it is active again."""
    require_admin(principal)
    names = checked_events(event_names) if event_names is not None else None
    if url is not None:
        _checked_url(core.settings, url)
    with core.db.write() as s:
        endpoint = _load(s, endpoint_id)
        changed: list[str] = []
        if url is not None and url != endpoint.url:
            endpoint.url, changed = url, [*changed, "url"]
        if description is not None and description != endpoint.description:
            endpoint.description, changed = description, [*changed, "description"]
        if active is not None and active != endpoint.active:
            endpoint.active, changed = active, [*changed, "active"]
        if names is not None:
            _subscribe(s, endpoint_id, names)
            changed.append("events")
        if changed:
            endpoint.updated_at = utcnow()
            _audit(s, principal, EventType.WEBHOOK_UPDATED, endpoint_id, fields=changed)
        s.flush()
        return _view(endpoint, _events_of(s, [endpoint_id])[endpoint_id])


def delete_endpoint(core: Core, principal: Principal, endpoint_id: int) -> None:
    """Remove the endpoint with its delivery log; what it had not delivered is not sent."""
    require_admin(principal)
    with core.db.write() as s:
        endpoint = _load(s, endpoint_id)
        s.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
        s.execute(delete(WebhookSubscription).where(WebhookSubscription.endpoint_id == endpoint_id))
        s.delete(endpoint)
        _audit(s, principal, EventType.WEBHOOK_DELETED, endpoint_id, url=endpoint.url)


def rotate_secret(core: Core, principal: Principal, endpoint_id: int) -> tuple[EndpointView, str]:
    """A new secret, at once in force for every try from now on (pending ones included); shown once."""
    require_admin(principal)
    secret, aead = new_secret(), sealer(core.db)
    with core.db.write() as s:
        endpoint = _load(s, endpoint_id)
        endpoint.secret_sealed = seal(aead, endpoint_id, secret)
        endpoint.secret_rotated_at = endpoint.updated_at = utcnow()
        _audit(s, principal, EventType.WEBHOOK_SECRET_ROTATED, endpoint_id)
        s.flush()
        return _view(endpoint, _events_of(s, [endpoint_id])[endpoint_id]), secret


def list_deliveries(
    core: Core, principal: Principal, endpoint_id: int, *, page: int, per_page: int, status: str | None = None
) -> Page[DeliveryView]:
    """An endpoint's delivery log, newest first."""
    require_admin(principal)
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationFailed(f"Unknown status {status!r}; one of {', '.join(DELIVERY_STATUSES)}", field="status")
    where = [WebhookDelivery.endpoint_id == endpoint_id]
    if status is not None:
        where.append(WebhookDelivery.status == status)
    with core.db.read() as s:
        _load(s, endpoint_id)
        total = s.scalar(counted(WebhookDelivery.__table__, where)) or 0
        rows = s.scalars(
            paged_window(
                select(WebhookDelivery),
                WebhookDelivery.id,
                where,
                [WebhookDelivery.id.desc()],
                window(total, page, per_page),
            )
        ).all()
        return Page([_delivery_view(d) for d in rows], total=total, page=page, per_page=per_page)


def _load_delivery(session: Session, endpoint_id: int, delivery_id: int) -> WebhookDelivery:
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        raise NotFound("Delivery not found", delivery_id=delivery_id)
    return delivery


def get_delivery(core: Core, principal: Principal, endpoint_id: int, delivery_id: int) -> DeliveryView:
    require_admin(principal)
    with core.db.read() as s:
        return _delivery_view(_load_delivery(s, endpoint_id, delivery_id))


def redeliver(core: Core, principal: Principal, endpoint_id: int, delivery_id: int) -> DeliveryView:
    """Send a delivery again, whatever its status, with its full count of tries: the same body and the same
    `webhook-id`, so a receiver that had it can tell."""
    require_admin(principal)
    with core.db.write() as s:
        delivery = _load_delivery(s, endpoint_id, delivery_id)
        delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, utcnow()
        _audit(s, principal, EventType.WEBHOOK_REDELIVERED, endpoint_id, delivery_id=delivery_id)
        s.flush()
        return _delivery_view(delivery)


# The payload: the document's `{event, timestamp, data}`, with its id forms (`vps-N`, `user-N`, `backup-N`).


def _owner_id(session: Session, account_id: int | None) -> str | None:
    """The account's first user: who a server or an invoice belongs to, as the document names owners."""
    if account_id is None:
        return None
    user_id = session.scalar(select(func.min(User.id)).where(User.account_id == account_id))
    return None if user_id is None else f"user-{user_id}"


def _server_data(session: Session, server_id: int) -> dict[str, Any]:
    server = session.get(Server, server_id)
    if server is None:
        return {"vps_id": f"vps-{server_id}"}
    plan = session.get(Plan, server.plan_id) if server.plan_id is not None else None
    return {
        "vps_id": f"vps-{server.id}",
        "user_id": _owner_id(session, server.account_id),
        "plan": plan.name if plan is not None else None,
        "name": server.label,
        "hostname": server.hostname,
        "status": server.status,
        "ip_address": server.ipv4,
    }


def payload_data(session: Session, event: Event) -> dict[str, Any]:
    """What `data` says of an event: its object in the document's words, then what the event itself recorded."""
    target = event.target_id
    numeric = int(target) if target.isascii() and target.isdigit() else None
    recorded = dict(event.data or {})
    data: dict[str, Any]
    if event.target_type == "server" and numeric is not None:
        data = _server_data(session, numeric)
    elif event.target_type == "snapshot" and numeric is not None:
        snapshot = session.get(Snapshot, numeric)
        server_id = snapshot.server_id if snapshot is not None else recorded.get("server_id")
        data = {"backup_id": f"backup-{numeric}"}
        if server_id is not None:
            data.update(_server_data(session, int(server_id)))
        if snapshot is not None:
            data.update(backup_name=snapshot.label, backup_type=snapshot.kind)
    elif event.target_type == "user" and numeric is not None:
        user = session.get(User, numeric)
        data = {"user_id": f"user-{numeric}"}
        if user is not None:
            data.update(email=user.email, name=user.name, status=user.status)
    elif event.target_type == "invoice" and numeric is not None:
        # As the billing routes name it (`/billing/invoices/inv-N`).
        data = {"user_id": _owner_id(session, event.account_id), "invoice_id": f"inv-{numeric}"}
    else:
        data = {"user_id": _owner_id(session, event.account_id), f"{event.target_type}_id": target}
    for key, value in recorded.items():
        if key not in ("kind", "server_id") and key not in data:
            data[key] = value
    if event.operation_id is not None:
        data.setdefault("operation_id", event.operation_id)
    return data


def payload(session: Session, event: Event) -> str:
    body = {
        "event": event.type,
        "timestamp": event.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": payload_data(session, event),
    }
    return json.dumps(body, separators=(",", ":"), default=str)
