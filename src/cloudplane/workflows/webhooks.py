"""The webhook sender: a task of every API process that sends the deliveries that are due (services/webhooks.py
keeps the endpoints and signs).

It claims a due delivery with one conditional UPDATE that counts the try and moves its `next_attempt_at` past the
try's timeout, sends it, and records the outcome: delivered, or failed and due again after a backoff with jitter, or
dead after `webhooks_max_attempts` tries (kept, and redeliverable by hand). A process killed during a try leaves the
delivery due again once the claim runs out: at least once, and the `webhook-id` (the event's id) lets a receiver
drop a repeat. Any number of processes send at once; each try is one process's. The body is made at the first try
and kept, so every try and every redelivery sends the same bytes. Database work runs in threads, never on the event
loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
from cryptography.exceptions import InvalidTag
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.db.tables import WEBHOOK_DUE_STATUSES, Event, WebhookDelivery, WebhookEndpoint
from cloudplane.domain.errors import ValidationFailed
from cloudplane.observability import METRICS
from cloudplane.services import outbound
from cloudplane.services.webhooks import payload, sealer, signed_headers, unseal
from cloudplane.workflows.dispatcher import db_now

log = logging.getLogger(__name__)

# Deliveries one pass of the sender looks at; the rest wait for the next pass.
BATCH = 100
# Beyond the try's own timeout, how long a claim holds a delivery (the time to record the outcome).
CLAIM_MARGIN_S = 5.0
# What a receiver's error is kept as, at most.
ERROR_LENGTH = 500
UNSEALABLE = (
    "The endpoint's secret cannot be unsealed (was CLOUDPLANE_SECRET_KEY changed?): rotate its secret, then redeliver"
)


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.tries = Counter(
            "cloudplane_webhook_deliveries_total",
            "Tries of webhook deliveries, by outcome: delivered, failed (due again later) or dead (out of tries).",
            ("outcome",),
            registry=registry,
        )


WEBHOOK_METRICS = WebhookMetrics(METRICS.registry)


@dataclass(frozen=True)
class Claimed:
    """One try of a delivery, claimed by this process."""

    id: int
    endpoint_id: int
    message_id: str
    event_type: str
    url: str
    # None when the sealed secret does not open (CLOUDPLANE_SECRET_KEY changed): the try fails without sending.
    secret: str | None
    body: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None


def _now(session: Session) -> datetime:
    return db_now(session)


def due_deliveries(core: Core, limit: int = BATCH) -> list[int]:
    """Deliveries whose try is due, to active endpoints, oldest due first."""
    with core.db.read() as s:
        now = _now(s)
        return list(
            s.scalars(
                select(WebhookDelivery.id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.status.in_(WEBHOOK_DUE_STATUSES),
                    WebhookDelivery.next_attempt_at <= now,
                    WebhookEndpoint.active.is_(True),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            )
        )


def claim(core: Core, delivery_id: int) -> Claimed | None:
    """Take one try of a due delivery (None: not due, or another process took it): one conditional UPDATE counts
    the try and holds the delivery for the try's timeout. The body is made here at the first try."""
    lease = timedelta(seconds=core.settings.webhooks_timeout_s + CLAIM_MARGIN_S)
    aead = sealer(core.db)
    with core.db.write() as s:
        now = _now(s)
        taken = s.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status.in_(WEBHOOK_DUE_STATUSES),
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + lease, last_attempt_at=now)
        )
        if cast(CursorResult[Any], taken).rowcount != 1:
            return None
        delivery = s.get(WebhookDelivery, delivery_id)
        endpoint = s.get(WebhookEndpoint, delivery.endpoint_id) if delivery is not None else None
        if delivery is None or endpoint is None:
            return None
        if delivery.body is None:
            event = s.scalar(select(Event).where(Event.id == delivery.event_id))
            delivery.body = (
                payload(s, event)
                if event is not None
                else json.dumps({"event": delivery.event_type, "timestamp": None, "data": {}})
            )
        try:
            secret: str | None = unseal(aead, endpoint.id, endpoint.secret_sealed)
        except InvalidTag:
            secret = None
        return Claimed(
            id=delivery.id,
            endpoint_id=endpoint.id,
            message_id=delivery.event_id,
            event_type=delivery.event_type,
            url=endpoint.url,
            secret=secret,
            body=delivery.body,
            attempts=delivery.attempts,
        )


def backoff_s(settings: Settings, attempts: int) -> float:
    """The wait after the `attempts`-th failed try: base * 2^(attempts-1), capped, of which a random half to all
    (jitter, so that the retries of many deliveries that failed together spread out)."""
    ceiling = min(settings.webhooks_backoff_max_s, settings.webhooks_backoff_base_s * 2 ** min(attempts - 1, 30))
    return random.uniform(ceiling / 2, ceiling)


def finish(core: Core, claimed: Claimed, outcome: Outcome) -> str:
    """Record a try's outcome; the delivery's new status. A redelivery asked for meanwhile wins (the row is left)."""
    settings = core.settings
    with core.db.write() as s:
        now = _now(s)
        values: dict[str, Any] = {"last_status_code": outcome.status_code, "last_error": outcome.error}
        if outcome.delivered:
            status = "delivered"
            values.update(status=status, delivered_at=now, last_error=None)
        elif claimed.attempts >= settings.webhooks_max_attempts:
            status = "dead"
            values.update(status=status)
        else:
            status = "failed"
            values.update(status=status, next_attempt_at=now + timedelta(seconds=backoff_s(settings, claimed.attempts)))
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == claimed.id, WebhookDelivery.attempts == claimed.attempts)
            .values(**values)
        )
    WEBHOOK_METRICS.tries.labels(status).inc()
    if status != "delivered":
        log.warning(
            "webhook delivery %s (%s) to endpoint %s: try %s %s: %s",
            claimed.id,
            claimed.event_type,
            claimed.endpoint_id,
            claimed.attempts,
            status,
            outcome.error or f"HTTP {outcome.status_code}",
        )
    return status


_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls


def _address_url(target: outbound.Target, address: outbound.IPAddress) -> str:
    """The URL with its host replaced by one checked address, so the connection goes where the check said."""
    parts = outbound.check_syntax(target.url, allow_private=True)
    host = f"[{address}]" if address.version == 6 else str(address)
    return parts._replace(netloc=f"{host}:{target.port}").geturl()


async def send(settings: Settings, claimed: Claimed) -> Outcome:
    """One try, all of it within `webhooks_timeout_s` (so it ends before its claim does): the URL checked again and
    resolved, the body posted to the addresses it resolved to (the next one only if one cannot be reached), no
    redirect followed, the reply's status read and its body left unread. Never raises for what a receiver does."""
    if claimed.secret is None:
        return Outcome(False, error=UNSEALABLE)
    try:
        async with asyncio.timeout(settings.webhooks_timeout_s):
            return await _post(settings, claimed, claimed.secret)
    except ValidationFailed as refused:
        return Outcome(False, error=refused.message[:ERROR_LENGTH])
    except TimeoutError:
        return Outcome(False, error=f"no reply within {settings.webhooks_timeout_s:g}s")
    except httpx.HTTPError as failed:
        return Outcome(False, error=f"{type(failed).__name__}: {failed}"[:ERROR_LENGTH])


async def _post(settings: Settings, claimed: Claimed, secret: str) -> Outcome:
    target = await asyncio.to_thread(outbound.resolve, claimed.url, allow_private=settings.webhooks_allow_private)
    body = claimed.body.encode()
    headers = signed_headers(secret, claimed.message_id, claimed.event_type, body, int(time.time()))
    bracketed = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.scheme == "https" else 80
    headers["Host"] = bracketed if target.port == default_port else f"{bracketed}:{target.port}"
    # A client per try: connections are never shared between endpoints (a pooled connection is keyed by address,
    # not by the name its TLS session was made for). No proxy from the environment, no redirects.
    error = "no address to connect to"
    async with httpx.AsyncClient(
        verify=_tls_context(), trust_env=False, follow_redirects=False, timeout=settings.webhooks_timeout_s
    ) as client:
        for address in target.addresses:
            request = client.build_request(
                "POST",
                _address_url(target, address),
                content=body,
                headers=headers,
                extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
            )
            try:
                response = await client.send(request, stream=True)
                await response.aclose()
            except httpx.ConnectError as failed:
                error = f"cannot connect to {address}: {failed}"
                continue
            if 200 <= response.status_code < 300:
                return Outcome(True, response.status_code)
            if 300 <= response.status_code < 400:
                return Outcome(False, response.status_code, "redirects are not followed; give the final URL")
            return Outcome(False, response.status_code, f"the receiver answered {response.status_code}")
    return Outcome(False, error=error[:ERROR_LENGTH])


async def deliver(core: Core, delivery_id: int) -> str | None:
    """Claim, send and record one try of a delivery; its new status, or None when it was not ours to try."""
    claimed = await asyncio.to_thread(claim, core, delivery_id)
    if claimed is None:
        return None
    outcome = await send(core.settings, claimed)
    return await asyncio.to_thread(finish, core, claimed, outcome)


async def deliver_due(core: Core) -> dict[int, str]:
    """One pass: every due delivery (up to BATCH) tried, `webhooks_concurrency` at a time; what became of each this
    process tried."""
    ids = await asyncio.to_thread(due_deliveries, core)
    gate = asyncio.Semaphore(core.settings.webhooks_concurrency)
    done: dict[int, str] = {}

    async def one(delivery_id: int) -> None:
        async with gate:
            try:
                status = await deliver(core, delivery_id)
            except Exception:  # noqa: BLE001 - one delivery's trouble (database away) must not stop the others'
                log.exception("webhook delivery %s: the try could not be made or recorded", delivery_id)
                return
            if status is not None:
                done[delivery_id] = status

    await asyncio.gather(*(one(i) for i in ids))
    return done


async def run_sender(core: Core) -> None:
    """Pass after pass until cancelled; a pass that finds a full batch is followed at once by the next."""
    interval = core.settings.webhooks_poll_interval_s
    while True:
        try:
            done = await deliver_due(core)
        except Exception:  # noqa: BLE001 - the loop must outlive a bad pass (database away)
            log.exception("webhook sender pass failed; retrying")
            done = {}
        if len(done) < BATCH:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))


def start_sender(core: Core) -> asyncio.Task[None] | None:
    """The sender as a task of this process's event loop (its database work goes to threads), unless
    CLOUDPLANE_WEBHOOKS_ENABLED is false."""
    if not core.settings.webhooks_enabled:
        return None
    return asyncio.create_task(run_sender(core), name="cloudplane-webhooks")
