"""Charges through the payment gateway, intent first: a `pending` charge row is committed before the gateway is
asked, and the outcome settles it (`succeeded` or `failed`) with its `payment.succeeded` or `payment.failed` event
in one transaction. Whatever the money pays for (an upgrade) is applied by its purpose's handler in that same
transaction, so a payment and what it bought commit together. A Stripe webhook about a charge still pending (the
process died between Stripe's answer and the settling) settles it the same way, once; so does the sweep
(`resolve`, run by workflows/billing.py) that finds a charge left pending and asks Stripe what became of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.engine import Database
from cloudplane.db.tables import Charge, StripeEvent, utcnow
from cloudplane.domain.errors import PaymentRequired, ProviderError
from cloudplane.domain.events import EventType
from cloudplane.services import events
from cloudplane.services.payments import ChargeResult
from cloudplane.services.users import forget_account

# purpose -> what a settled charge of that purpose does, in the settling transaction (services register theirs).
Settled = Callable[[Session, Charge, ChargeResult], None]
_handlers: dict[str, Settled] = {}


def on_settled(purpose: str) -> Callable[[Settled], Settled]:
    def register(handler: Settled) -> Settled:
        _handlers[purpose] = handler
        return handler

    return register


def begin(
    session: Session,
    *,
    account_id: int,
    gateway: str,
    amount: Decimal,
    currency: str,
    description: str,
    purpose: str,
    data: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Charge:
    """Record a charge about to be made, in the caller's transaction; its idempotency key (a new one unless the
    caller derives it from what is paid for) is the gateway's."""
    charge = Charge(
        account_id=account_id,
        gateway=gateway,
        amount=amount,
        currency=currency,
        description=description,
        purpose=purpose,
        data=data or {},
        idempotency_key=idempotency_key or f"cloudplane-charge-{uuid.uuid4()}",
        status="pending",
    )
    session.add(charge)
    session.flush()
    return charge


async def collect(core: Core, charge: Charge) -> ChargeResult:
    """Ask the gateway for the money of a recorded charge (raises `ProviderError` when the outcome is unknown: the
    charge stays pending and a retry must reuse its key)."""
    if core.stripe is None:
        raise PaymentRequired("No payment gateway is configured here: card payments are off")
    return await core.stripe.charge_async(
        charge.account_id, charge.amount, charge.currency, charge.description, charge.idempotency_key
    )


def settle(session: Session, charge_id: int, result: ChargeResult) -> bool:
    """Record a charge's outcome and event, and apply what it paid for; False (and nothing done) when it was
    settled already."""
    status = "succeeded" if result.succeeded else "failed"
    changed = session.execute(
        update(Charge)
        .where(Charge.id == charge_id, Charge.status == "pending")
        .values(status=status, reference=result.reference, failure_reason=result.failure_reason, settled_at=utcnow())
    )
    if cast(CursorResult[Any], changed).rowcount == 0:
        return False
    charge = session.get(Charge, charge_id, populate_existing=True)
    assert charge is not None
    events.record(
        session,
        EventType.PAYMENT_SUCCEEDED if result.succeeded else EventType.PAYMENT_FAILED,
        account_id=charge.account_id,
        target_type="payment",
        target_id=charge.id,
        data={
            "payment_id": charge.id,
            "amount": str(charge.amount),
            "currency": charge.currency,
            "description": charge.description,
            "purpose": charge.purpose,
            "gateway": charge.gateway,
            "reference": result.reference,
            **({} if result.succeeded else {"failure_reason": result.failure_reason}),
        },
    )
    if (handler := _handlers.get(charge.purpose)) is not None:
        handler(session, charge, result)
    return True


async def pay(
    core: Core, *, account_id: int, amount: Decimal, currency: str, description: str, purpose: str
) -> tuple[int, ChargeResult]:
    """Charge the account now through the gateway, recorded before and after: the charge's id and outcome."""
    if core.stripe is None:
        raise PaymentRequired("No payment gateway is configured here: card payments are off")
    gateway = core.stripe.name

    def record() -> Charge:
        with core.db.write() as s:
            charge = begin(
                s,
                account_id=account_id,
                gateway=gateway,
                amount=amount,
                currency=currency,
                description=description,
                purpose=purpose,
            )
        return charge

    charge = await core.db.run(record)
    result = await collect(core, charge)
    await core.db.run(_settle_now, core.db, charge.id, result)
    return charge.id, result


def _settle_now(db: Database, charge_id: int, result: ChargeResult) -> bool:
    with db.write() as s:
        return settle(s, charge_id, result)


# A charge still pending this long after it was recorded is taken for left behind: its process died, or the gateway
# could not be reached. Sooner, the first ask may still be waiting on Stripe (up to three tries of its timeout).
STUCK_AFTER = timedelta(minutes=5)
# Charges one sweep looks at.
SWEEP_BATCH = 50


def stuck(session: Session, now: datetime) -> list[int]:
    """The charges left pending, oldest first (at most a sweep's batch)."""
    return list(
        session.scalars(
            select(Charge.id)
            .where(Charge.status == "pending", Charge.created_at < now - STUCK_AFTER)
            .order_by(Charge.created_at, Charge.id)
            .limit(SWEEP_BATCH)
        )
    )


async def ask(core: Core, charge_id: int) -> ChargeResult | None:
    """Ask the gateway for a charge just recorded and settle it; None (the charge left pending for the sweep) when
    the outcome is unknown or it was settled meanwhile."""
    charge = await core.db.run(_load, core.db, charge_id)
    if charge is None or charge.status != "pending":
        return None
    try:
        result = await collect(core, charge)
    except ProviderError:
        return None
    return result if await core.db.run(_settle_now, core.db, charge_id, result) else None


def _load(db: Database, charge_id: int) -> Charge | None:
    with db.read() as s:
        return s.get(Charge, charge_id)


async def resolve(core: Core, charge_id: int) -> str:
    """Settle a charge left pending: Stripe is asked for the PaymentIntent made with the charge's idempotency key,
    and its outcome settles the charge; when Stripe holds none the charge was never asked for, and is asked for now
    with that same key. Outside any transaction. What was done, in a word ("unknown": Stripe could not be asked,
    the charge stays pending for the next sweep)."""
    charge = await core.db.run(_load, core.db, charge_id)
    if charge is None or charge.status != "pending":
        return "already settled"
    if core.stripe is None or charge.gateway != core.stripe.name:
        return "no gateway"
    try:
        result = await core.stripe.find_charge(charge.idempotency_key)
        if result is None:
            result = await collect(core, charge)
    except ProviderError:
        return "unknown"
    settled = await core.db.run(_settle_now, core.db, charge_id, result)
    forget_account(charge.account_id)  # what it paid for (a tier) may change the account's limits
    return "settled" if settled else "already settled"


# Stripe's events about PaymentIntents that settle a charge still pending here.
_INTENT_OUTCOMES = {"payment_intent.succeeded": True, "payment_intent.payment_failed": False}


def handle_stripe_event(db: Database, event: dict[str, Any]) -> str:
    """Take a verified Stripe event once (its id is kept; a redelivery is acknowledged and ignored): a PaymentIntent
    that succeeded or failed settles the charge it was made for, if that is still pending. What was done, in a
    word."""
    try:
        with db.write() as s:
            s.add(StripeEvent(id=str(event["id"]), type=str(event.get("type", ""))[:100]))
            s.flush()
            succeeded = _INTENT_OUTCOMES.get(event.get("type", ""))
            if succeeded is None:
                return "ignored"
            intent = event.get("data", {}).get("object", {})
            key = (intent.get("metadata") or {}).get("cloudplane_charge")
            charge_id = s.scalar(select(Charge.id).where(Charge.idempotency_key == key)) if key else None
            if charge_id is None:
                return "unknown payment"
            error = intent.get("last_payment_error") or {}
            result = ChargeResult(succeeded, intent.get("id"), None if succeeded else error.get("message"))
            return "settled" if settle(s, charge_id, result) else "already settled"
    except IntegrityError:
        return "duplicate"
