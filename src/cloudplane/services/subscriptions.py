"""VibeCaaS subscriptions: an account's tier as something it pays for monthly.

An upgrade applies at once: the difference of the monthly prices for what is left of the period (the whole new
price, on a new period starting now, when coming from the free tier) is charged off-session to the default card
first, and the tier changes in the transaction that records the payment. A downgrade or a cancellation is set for
the end of the period (`cancel_at_period_end`, `pending_tier`) and applied by the hourly job in
workflows/subscriptions.py. Whenever the tier changes, the principals cached with the old tier are forgotten, so
quotas and rate limits follow from the next request. A paid tier without a way to pay is `PaymentRequired`.

A paid period's renewal is billed on the monthly invoice: `apply_period_ends` writes it as a usage record of the
renewal's price at the period's start (resource type `subscription`), so it shows in `/billing/usage`, the balance
and the month's invoice beside the servers, and is paid as the invoice is (credit, then the card, then dunning).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.engine import Database
from cloudplane.db.tables import Account, Charge, PaymentMethod, Subscription, UsageRecord, utcnow
from cloudplane.domain.errors import Conflict, PaymentFailed, PaymentRequired, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.pricing import CURRENCY
from cloudplane.domain.tiers import MONTHLY_PRICE, TIERS, add_month, is_upgrade, proration
from cloudplane.domain.times import assume_utc, iso_z
from cloudplane.services import charges, events
from cloudplane.services.accounts import Principal
from cloudplane.services.billing import RENEWAL
from cloudplane.services.payments import ChargeResult
from cloudplane.services.users import forget_account

PURPOSE = "subscription"


@dataclass(frozen=True)
class SubscriptionView:
    tier: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    pending_tier: str | None
    monthly_price: Decimal
    currency: str
    payment_method: PaymentMethod | None
    # What this request charged (an upgrade), when it did.
    amount_charged: Decimal | None = None


def period_of(anchor: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The monthly period, counted from `anchor`, that holds `now`."""
    start = anchor
    while (end := add_month(start)) <= now:
        start = end
    return start, end


def _view(db: Database, account_id: int, now: datetime, charged: Decimal | None = None) -> SubscriptionView:
    with db.read() as s:
        account = s.get(Account, account_id)
        assert account is not None
        row = s.get(Subscription, account_id)
        card = s.scalars(
            select(PaymentMethod).where(PaymentMethod.account_id == account_id, PaymentMethod.is_default.is_(True))
        ).first()
    if row is None:
        start, end = period_of(assume_utc(account.created_at), now)
        cancel, pending = False, None
    else:
        start, end = row.current_period_start, row.current_period_end
        cancel, pending = row.cancel_at_period_end, row.pending_tier
    return SubscriptionView(
        tier=account.tier,
        status="active",
        current_period_start=start,
        current_period_end=end,
        cancel_at_period_end=cancel,
        pending_tier=pending,
        monthly_price=MONTHLY_PRICE[account.tier],
        currency=CURRENCY,
        payment_method=card,
        amount_charged=charged,
    )


def get_subscription(db: Database, principal: Principal) -> SubscriptionView:
    return _view(db, principal.account_id, utcnow())


def _row(session: Session, account: Account, now: datetime) -> Subscription:
    """The account's subscription row, made (on the free tier's calendar) if it has none; locked for the caller's
    transaction on PostgreSQL."""
    row = session.get(Subscription, account.id, with_for_update=True)
    if row is None:
        start, end = period_of(assume_utc(account.created_at), now)
        row = Subscription(account_id=account.id, current_period_start=start, current_period_end=end)
        row.cancel_at_period_end = False
        session.add(row)
        session.flush()
    return row


def _schedule(db: Database, account_id: int, tier: str | None, now: datetime) -> None:
    """Set (or, with None, withdraw) the tier the account moves to at the end of its period."""
    with db.write() as s:
        account = s.get(Account, account_id, with_for_update=True)
        assert account is not None
        if tier is None and s.get(Subscription, account_id) is None:
            return  # nothing pending to withdraw
        row = _row(s, account, now)
        if row.charge_id is not None:
            raise Conflict("An upgrade of this subscription is being paid for; try again in a moment", field="tier")
        if (row.pending_tier, row.cancel_at_period_end) == (tier, tier == "free"):
            return  # asked again: nothing changes
        row.pending_tier = tier
        row.cancel_at_period_end = tier == "free"
        events.record(
            s,
            EventType.SUBSCRIPTION_UPDATE_SCHEDULED,
            account_id=account_id,
            target_type="subscription",
            target_id=account_id,
            data={
                "tier": account.tier,
                "pending_tier": tier,
                "cancel_at_period_end": row.cancel_at_period_end,
                "at": iso_z(row.current_period_end),
            },
        )


def _claim(db: Database, account_id: int, tier: str, current: str, now: datetime, gateway: str) -> Charge:
    """Record the upgrade's charge and hold the subscription for it, in one transaction: a second upgrade while
    this one is paid for, or a tier that changed since it was priced, is a conflict."""
    with db.write() as s:
        account = s.get(Account, account_id, with_for_update=True)
        assert account is not None
        if account.tier != current:
            raise Conflict("The subscription changed meanwhile; look at it again and retry", field="tier")
        row = _row(s, account, now)
        if row.charge_id is not None:
            raise Conflict("An upgrade of this subscription is being paid for; try again in a moment", field="tier")
        if MONTHLY_PRICE[current] == 0:
            # From the free tier a paid period starts now, at the whole price.
            start, end = now, add_month(now)
            amount = MONTHLY_PRICE[tier]
        else:
            start, end = row.current_period_start, row.current_period_end
            amount = proration(current, tier, start, end, now)
        charge = charges.begin(
            s,
            account_id=account_id,
            gateway=gateway,
            amount=amount,
            currency=CURRENCY,
            description=f"Upgrade from {current} to {tier}, {start:%Y-%m-%d} to {end:%Y-%m-%d}",
            purpose=PURPOSE,
            data={"from": current, "tier": tier, "period_start": iso_z(start), "period_end": iso_z(end)},
        )
        row.charge_id = charge.id
    return charge


@charges.on_settled(PURPOSE)
def _upgrade_settled(session: Session, charge: Charge, result: ChargeResult) -> None:
    """A paid upgrade takes effect with its payment; a refused one leaves the tier as it was."""
    row = session.get(Subscription, charge.account_id, with_for_update=True)
    if row is None or row.charge_id != charge.id:
        return
    row.charge_id = None
    if not result.succeeded:
        return
    tier = charge.data["tier"]
    session.execute(update(Account).where(Account.id == charge.account_id).values(tier=tier))
    row.current_period_start = datetime.fromisoformat(charge.data["period_start"])
    row.current_period_end = datetime.fromisoformat(charge.data["period_end"])
    row.pending_tier = None
    row.cancel_at_period_end = False
    _tier_changed(session, charge.account_id, charge.data["from"], tier, "upgrade", amount_charged=str(charge.amount))


def _tier_changed(session: Session, account_id: int, old: str, new: str, reason: str, **data: str) -> None:
    events.record(
        session,
        EventType.SUBSCRIPTION_UPDATED,
        account_id=account_id,
        target_type="subscription",
        target_id=account_id,
        data={"from": old, "tier": new, "reason": reason, **data},
    )


def _settle(db: Database, charge_id: int, result: ChargeResult) -> None:
    with db.write() as s:
        charges.settle(s, charge_id, result)


# An upgrade's charge still pending after this long (its request died, or Stripe could not be reached) is asked
# for again, with its own idempotency key, by the account's next change: Stripe answers a retry with the first
# outcome, so it is never taken twice. Sooner, the first request may still be waiting on Stripe.
RESUME_AFTER = timedelta(minutes=2)


def _stale_claim(db: Database, account_id: int, now: datetime) -> Charge | None:
    with db.read() as s:
        return s.scalars(
            select(Charge)
            .join(Subscription, Subscription.charge_id == Charge.id)
            .where(
                Subscription.account_id == account_id,
                Charge.status == "pending",
                Charge.created_at < now - RESUME_AFTER,
            )
        ).first()


async def _pay_for(core: Core, charge: Charge) -> ChargeResult:
    """Ask for an upgrade's charge and settle it: the upgrade applies with its payment, or the claim is let go."""
    result = await charges.collect(core, charge)
    await core.db.run(_settle, core.db, charge.id, result)
    forget_account(charge.account_id)
    return result


async def change_tier(core: Core, principal: Principal, tier: str) -> SubscriptionView:
    """Move the caller's account to `tier`: at once (and paid, prorated) when it costs more, at the end of the
    period when it costs less. Asking for the current tier withdraws a pending downgrade or cancellation."""
    if tier not in TIERS:
        raise ValidationFailed(f"Tier must be one of {', '.join(TIERS)}", field="tier")
    db, account_id, now = core.db, principal.account_id, utcnow()
    if (stale := await db.run(_stale_claim, db, account_id, now)) is not None:
        await _pay_for(core, stale)
    current = await db.run(_tier_of, db, account_id)
    if tier == current or not is_upgrade(current, tier):
        await db.run(_schedule, db, account_id, None if tier == current else tier, now)
        return await db.run(_view, db, account_id, now)
    gateway = core.stripe
    if gateway is None or not await gateway.can_charge_async(account_id):
        raise PaymentRequired(
            f"The {tier} tier costs {MONTHLY_PRICE[tier]} {CURRENCY} a month: add a card first "
            "(POST /api/v1/billing/payment-methods)",
            field="tier",
            tier=tier,
        )
    charge = await db.run(_claim, db, account_id, tier, current, now, gateway.name)
    result = await _pay_for(core, charge)
    if not result.succeeded:
        raise PaymentFailed(result.failure_reason or "The payment was refused", field="tier", tier=tier)
    return await db.run(_view, db, account_id, utcnow(), charge.amount)


async def cancel(core: Core, principal: Principal) -> SubscriptionView:
    """Cancel at the end of the period: the account keeps its tier until then and is on the free tier after."""
    return await change_tier(core, principal, "free")


def _tier_of(db: Database, account_id: int) -> str:
    with db.read() as s:
        return s.execute(select(Account.tier).where(Account.id == account_id)).scalar_one()


def _bill_renewal(session: Session, account_id: int, tier: str, start: datetime, end: datetime) -> None:
    """The renewal of a paid period, owed from its start: a usage record the month's invoice bills (once: the
    records' unique key refuses a second for the same period)."""
    price = MONTHLY_PRICE[tier]
    session.execute(
        insert(UsageRecord),
        {
            "account_id": account_id,
            "resource_type": RENEWAL,
            "resource_id": f"{account_id}-{start:%Y%m%dT%H%M%S}",
            "hour_at": start,
            "label": f"{tier.capitalize()} subscription, {start:%Y-%m-%d} to {end:%Y-%m-%d}",
            "plan": tier,
            "running_s": 0,
            "stopped_s": 0,
            "storage_gb_s": 0,
            "gpu_s": 0,
            "transfer_bytes": 0,
            "cost_micros": int(price * 1_000_000),
            "monthly_cap": None,
            "transfer_allowance_gb": None,
        },
    )
    events.record(
        session,
        EventType.SUBSCRIPTION_RENEWED,
        account_id=account_id,
        target_type="subscription",
        target_id=account_id,
        data={"tier": tier, "amount": str(price), "period_start": iso_z(start), "period_end": iso_z(end)},
    )


def apply_period_ends(session: Session, tick: datetime) -> tuple[str, list[int]]:
    """At each period's end: move to the pending tier (a downgrade, or free after a cancellation) and start the
    next period (none on the free tier). A summary and the accounts whose tier changed."""
    changed: list[int] = []
    rows = session.scalars(
        select(Subscription)
        .where(Subscription.current_period_end <= tick, Subscription.charge_id.is_(None))
        .with_for_update()
    ).all()
    for row in rows:
        account = session.get(Account, row.account_id)
        assert account is not None
        current, tier = account.tier, row.pending_tier or account.tier
        if tier != current:
            account.tier = tier
            _tier_changed(session, account.id, current, tier, "period_end")
            changed.append(account.id)
        if MONTHLY_PRICE[tier] == 0:
            session.delete(row)
            continue
        start, end = row.current_period_start, row.current_period_end
        while end <= tick:
            start, end = end, add_month(end)
            _bill_renewal(session, account.id, tier, start, end)
        row.current_period_start, row.current_period_end = start, end
        row.pending_tier, row.cancel_at_period_end = None, False
    return f"{len(rows)} periods ended, {len(changed)} tiers changed", changed
