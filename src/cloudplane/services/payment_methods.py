"""Saved cards: each account's cards live at Stripe, on a customer made for the account with its first card, and
are listed from here. One card is the default, the one charged off-session; the first card is it, and removing it
makes the newest remaining card the default."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from cloudplane.core import Core
from cloudplane.db.engine import Database
from cloudplane.db.tables import Account, PaymentMethod, User
from cloudplane.domain.errors import Conflict, NotFound
from cloudplane.domain.events import EventType
from cloudplane.services import billing, events
from cloudplane.services.accounts import Principal
from cloudplane.services.stripe_gateway import Card, StripeGateway
from cloudplane.services.tenancy import mine


def list_payment_methods(db: Database, principal: Principal) -> list[PaymentMethod]:
    """The account's cards, the default first, then the newest."""
    with db.read() as s:
        return list(
            s.scalars(
                select(PaymentMethod)
                .where(mine(PaymentMethod, principal))
                .order_by(PaymentMethod.is_default.desc(), PaymentMethod.id.desc())
            )
        )


def _gateway(core: Core) -> StripeGateway:
    if core.stripe is None:
        raise Conflict(
            "Card payments are off on this installation (no Stripe key is configured); ask an administrator",
            field="payment_method_id",
        )
    return core.stripe


def _owned(db: Database, principal: Principal, reference: str) -> PaymentMethod:
    with db.read() as s:
        method = s.scalars(
            select(PaymentMethod).where(mine(PaymentMethod, principal), PaymentMethod.reference == reference)
        ).first()
    if method is None:
        raise NotFound("Payment method not found", payment_method_id=reference)
    return method


def _customer_of(db: Database, account_id: int) -> tuple[str | None, str, str]:
    with db.read() as s:
        account = s.get(Account, account_id)
        assert account is not None
        email = s.scalar(select(User.email).where(User.account_id == account_id).order_by(User.id)) or account.email
    return account.stripe_customer_id, email, account.name


def _keep_customer(db: Database, account_id: int, customer: str) -> str:
    """Record the account's Stripe customer unless another request did first; the one recorded."""
    with db.write() as s:
        s.execute(
            update(Account)
            .where(Account.id == account_id, Account.stripe_customer_id.is_(None))
            .values(stripe_customer_id=customer)
        )
        kept = s.execute(select(Account.stripe_customer_id).where(Account.id == account_id)).scalar_one()
    assert kept is not None
    return kept


async def customer_of(core: Core, account_id: int) -> str:
    """The account's Stripe customer, made now if it has none."""
    gateway = _gateway(core)
    customer, email, name = await core.db.run(_customer_of, core.db, account_id)
    if customer is not None:
        return customer
    made = await gateway.create_customer(account_id, email=email, name=name)
    return await core.db.run(_keep_customer, core.db, account_id, made)


def _save(db: Database, account_id: int, card: Card, set_as_default: bool) -> PaymentMethod:
    with db.write() as s:
        has_default = s.scalar(
            select(PaymentMethod.id).where(PaymentMethod.account_id == account_id, PaymentMethod.is_default.is_(True))
        )
        default = set_as_default or has_default is None
        if default:
            s.execute(update(PaymentMethod).where(PaymentMethod.account_id == account_id).values(is_default=False))
        method = PaymentMethod(
            account_id=account_id,
            gateway="stripe",
            reference=card.reference,
            type=card.type,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            is_default=default,
        )
        s.add(method)
        s.flush()
        events.record(
            s,
            EventType.PAYMENT_METHOD_ADDED,
            account_id=account_id,
            target_type="payment_method",
            target_id=card.reference,
            data={"brand": card.brand, "last4": card.last4, "is_default": default},
        )
    return method


def _make_default(db: Database, account_id: int, reference: str) -> PaymentMethod:
    with db.write() as s:
        s.execute(
            update(PaymentMethod)
            .where(PaymentMethod.account_id == account_id)
            .values(is_default=PaymentMethod.reference == reference)
        )
        return s.scalars(
            select(PaymentMethod).where(PaymentMethod.account_id == account_id, PaymentMethod.reference == reference)
        ).one()


def _taken(db: Database, reference: str) -> int | None:
    with db.read() as s:
        return s.scalar(select(PaymentMethod.account_id).where(PaymentMethod.reference == reference))


async def add_payment_method(
    core: Core, principal: Principal, payment_method_id: str, *, set_as_default: bool
) -> PaymentMethod:
    """Save a card made by Stripe (a PaymentMethod id, pm_...) on the account's customer. Adding a card already
    saved changes nothing but, with `set_as_default`, which card is the default. A card Stripe refuses is a
    `PaymentFailed` with Stripe's reason. A card that becomes the default is charged at once for the account's open
    invoices (their outcome is in their `payment.succeeded` or `payment.failed` events, not in this reply)."""
    owner = await core.db.run(_taken, core.db, payment_method_id)
    if owner is not None and owner != principal.account_id:
        raise NotFound("Payment method not found", field="payment_method_id")
    gateway = _gateway(core)
    customer = await customer_of(core, principal.account_id)
    if owner == principal.account_id:
        if set_as_default:
            await gateway.set_default(customer, payment_method_id)
            method = await core.db.run(_make_default, core.db, principal.account_id, payment_method_id)
            await billing.charge_open_invoices(core, principal.account_id)
            return method
        return await core.db.run(_owned, core.db, principal, payment_method_id)
    card = await gateway.attach(customer, payment_method_id)
    will_default = set_as_default or not await core.db.run(list_payment_methods, core.db, principal)
    if will_default:
        await gateway.set_default(customer, card.reference)
    try:
        method = await core.db.run(_save, core.db, principal.account_id, card, will_default)
    except IntegrityError:
        raise Conflict("This card is being saved by another request", field="payment_method_id") from None
    if will_default:
        await billing.charge_open_invoices(core, principal.account_id)
    return method


def _remove(db: Database, principal: Principal, reference: str) -> PaymentMethod | None:
    """Delete the card; the card that became the default in its place, if it was the default."""
    with db.write() as s:
        method = s.scalars(
            select(PaymentMethod)
            .where(mine(PaymentMethod, principal), PaymentMethod.reference == reference)
            .with_for_update()
        ).first()
        if method is None:
            raise NotFound("Payment method not found", payment_method_id=reference)
        s.delete(method)
        events.record(
            s,
            EventType.PAYMENT_METHOD_REMOVED,
            account_id=principal.account_id,
            target_type="payment_method",
            target_id=reference,
            data={"brand": method.brand, "last4": method.last4},
        )
        if not method.is_default:
            return None
        s.flush()
        successor = s.scalars(
            select(PaymentMethod).where(mine(PaymentMethod, principal)).order_by(PaymentMethod.id.desc())
        ).first()
        if successor is not None:
            successor.is_default = True
        return successor


async def remove_payment_method(core: Core, principal: Principal, reference: str) -> None:
    """Remove a card from Stripe and from the account."""
    await core.db.run(_owned, core.db, principal, reference)
    gateway = _gateway(core)
    await gateway.detach(reference)
    successor = await core.db.run(_remove, core.db, principal, reference)
    if successor is not None:
        customer = await customer_of(core, principal.account_id)
        await gateway.set_default(customer, successor.reference)
