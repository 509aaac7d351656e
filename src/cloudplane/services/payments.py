"""Payment gateways: how an invoice gets paid, and money an admin records by hand.

The interface a gateway driver implements (`PaymentGateway`) is two synchronous calls:

    can_charge(account_id) -> bool
    charge(account_id, amount, currency, description, idempotency_key) -> ChargeResult

- `can_charge` says whether the account has a standing way to be charged off-session (later, unattended: an
  invoice, a subscription's upgrade). It is the one question every caller asks before charging: a paid tier needs a
  yes (else `402 PAYMENT_REQUIRED`), and an invoice that credit does not cover is charged only when it says yes.

- `amount` is a `Decimal` in `currency` (to the cent); `description` is what the payer's statement shows
  ("Invoice INV-2026-001"); `idempotency_key` is stable for one thing being paid (`invoice-<id>`): a retried
  charge with the same key must never take the money twice (Stripe takes it as its `Idempotency-Key`).
- It returns `ChargeResult(succeeded, reference, failure_reason)`: the gateway's own reference for a charge that
  went through (a PaymentIntent id, an offline payment's id), or why it did not (Stripe's decline message). A
  refused charge is a result, not an exception; an exception means the gateway could not be asked (retry later).
- `name` is the gateway's name, recorded on each payment (`offline`, `stripe`).

*Offline* (the default; no outside service) pays from the account's credit (`accounts.balance`), which grows with
the payments and credits admins record (`record_payment`, `grant_credit`: API and CLI). It works in the caller's
transaction, so an invoice and the credit that paid it change together. A remote gateway (Stripe) is asked before
the transaction that records the outcome; its idempotency key makes asking again after a crash safe. A gateway
that calls out over the network (Stripe) is never called inside a database transaction: the charge is recorded
first (services/charges.py), committed, asked for, then settled.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, Update, insert, update
from sqlalchemy.orm import Session

from cloudplane.db.tables import Account, Payment, table_of, utcnow
from cloudplane.domain.events import EventType
from cloudplane.domain.pricing import CENT
from cloudplane.services import events


@dataclass(frozen=True)
class ChargeResult:
    """The outcome of a charge: `reference` is the gateway's id of it (a PaymentIntent's pi_..., an offline
    charge's key), when one was made; `failure_reason` the gateway's words for a refusal ("Your card was
    declined.")."""

    succeeded: bool
    reference: str | None = None
    failure_reason: str | None = None


class PaymentGateway(Protocol):
    name: str

    def can_charge(self, account_id: int) -> bool:
        """Whether the account has a standing way to be charged off-session (no network call)."""
        ...

    def charge(
        self, account_id: int, amount: Decimal, currency: str, description: str, idempotency_key: str
    ) -> ChargeResult:
        """Take `amount` from the account's way to pay; idempotent per `idempotency_key`."""
        ...


_accounts = table_of(Account)


class OfflineGateway:
    """Pays from the account's credit, in the transaction of `session`: a charge larger than the credit is refused
    and changes nothing. Idempotency comes from the caller's transaction (the invoice it pays is marked paid in it)."""

    name = "offline"

    def __init__(self, session: Session) -> None:
        self.session = session

    def can_charge(self, account_id: int) -> bool:
        """Never: credit is money already received, spent on invoices as they come (`charge` takes it), not a
        standing authority to charge. An upgrade is paid at once and a paid tier renews every month, so both need a
        card; without one an account stays on the free tier (unless an admin sets its tier). Renewals, once a paid
        period exists, go on the monthly invoice, which credit does pay like any other line."""
        return False

    def charge(
        self, account_id: int, amount: Decimal, currency: str, description: str, idempotency_key: str
    ) -> ChargeResult:
        # One conditional UPDATE: two settlements racing for the same credit cannot both take it.
        taken: Update = (
            update(_accounts)
            .where(_accounts.c.id == account_id, _accounts.c.balance >= amount)
            .values(balance=_accounts.c.balance - amount)
        )
        result = cast(CursorResult[Any], self.session.execute(taken))
        if result.rowcount != 1:
            return ChargeResult(False, failure_reason=f"Account credit is less than {amount} {currency}")
        return ChargeResult(True, reference=idempotency_key)


def add_credit(
    session: Session,
    account_id: int,
    amount: Decimal,
    *,
    kind: str,
    gateway: str,
    currency: str,
    reference: str | None = None,
    note: str | None = None,
    actor_user_id: int | None = None,
) -> int:
    """Record money received (`kind` payment) or granted (`kind` credit) and add it to the account's credit, with its
    `payment.succeeded` event, in the caller's transaction; the payment's id."""
    amount = amount.quantize(CENT)
    session.execute(update(_accounts).where(_accounts.c.id == account_id).values(balance=_accounts.c.balance + amount))
    payment_id = session.execute(
        insert(table_of(Payment)).returning(table_of(Payment).c.id),
        {
            "account_id": account_id,
            "kind": kind,
            "gateway": gateway,
            "amount": amount,
            "currency": currency,
            "reference": reference,
            "note": note,
            "actor_user_id": actor_user_id,
            "created_at": utcnow(),
        },
    ).scalar_one()
    events.record(
        session,
        EventType.PAYMENT_SUCCEEDED,
        account_id=account_id,
        target_type="payment",
        target_id=payment_id,
        data={"payment_id": payment_id, "kind": kind, "amount": str(amount), "currency": currency, "gateway": gateway},
    )
    return int(payment_id)
