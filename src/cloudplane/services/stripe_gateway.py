"""The Stripe payment gateway, through the official `stripe` package: a customer per account, cards saved as
PaymentMethods, charges as off-session PaymentIntents on the account's default card, and Stripe's signed webhooks.

It uses the package's asynchronous calls (`*_async`, on its httpx client): every call here is a network round trip
to Stripe (up to its timeout when Stripe is slow), made from request handlers on the event loop, so a slow Stripe
holds no thread of the threadpool the database calls share. Database reads it needs go through `Database.run`.
`charge` and `can_charge` are also synchronous, as the `PaymentGateway` interface (services/payments.py) has them,
for the invoice runs, which charge from worker threads after their commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import select
from stripe.params import PaymentIntentCreateParams

from cloudplane.db.engine import Database
from cloudplane.db.tables import Account, PaymentMethod
from cloudplane.domain.errors import NotFound, PaymentFailed, ProviderError, Unauthorized, ValidationFailed
from cloudplane.domain.pricing import CENT
from cloudplane.services.payments import ChargeResult

NAME = "stripe"
# Seconds a call to Stripe may take before it counts as failed.
TIMEOUT_S = 30.0
# What a charge without a card on file answers.
NO_CARD = "No payment method on file: add a card (POST /api/v1/billing/payment-methods)"


@dataclass(frozen=True)
class Card:
    """What Cloudplane keeps and shows of a saved payment method."""

    reference: str
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None


def cents(amount: Decimal) -> int:
    """An amount in the currency's smallest unit, as Stripe counts it (USD: cents)."""
    return int((amount.quantize(CENT) * 100).to_integral_value())


def _reason(error: stripe.StripeError) -> str:
    return error.user_message or str(error) or type(error).__name__


def _payer(db: Database, account_id: int) -> tuple[str | None, str | None]:
    """The account's Stripe customer and its default card's reference."""
    with db.read() as s:
        customer = s.scalar(select(Account.stripe_customer_id).where(Account.id == account_id))
        card = s.scalar(
            select(PaymentMethod.reference).where(
                PaymentMethod.account_id == account_id,
                PaymentMethod.gateway == NAME,
                PaymentMethod.is_default.is_(True),
            )
        )
    return customer, card


def _intent_params(
    db: Database, account_id: int, amount: Decimal, currency: str, description: str, idempotency_key: str
) -> PaymentIntentCreateParams | None:
    """The off-session PaymentIntent that charges the account's default card; None without a card."""
    if amount <= 0:
        raise ValueError(f"a charge is of a positive amount, not {amount}")
    customer, card = _payer(db, account_id)
    if customer is None or card is None:
        return None
    return {
        "amount": cents(amount),
        "currency": currency.lower(),
        "customer": customer,
        "payment_method": card,
        "confirm": True,
        "off_session": True,
        # localstripe takes no `description` on a PaymentIntent; the metadata carries it to Stripe's dashboard and
        # back in the webhooks, and the key lets a charge whose outcome was lost be found (`find_charge`).
        "metadata": {
            "cloudplane_account_id": str(account_id),
            "cloudplane_charge": idempotency_key,
            "description": description[:500],
        },
    }


def _refused(error: stripe.StripeError) -> ChargeResult:
    """A charge Stripe refused, as a result; raises `ProviderError` when the outcome is unknown."""
    if isinstance(error, stripe.CardError):
        body: Any = error.json_body or {}
        return ChargeResult(False, body.get("error", {}).get("payment_intent", {}).get("id"), _reason(error))
    if isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError, stripe.IdempotencyError)):
        # Unknown outcome (or the same key still in flight at Stripe): the charge stays pending.
        raise ProviderError(f"Stripe could not take the payment now: {_reason(error)}") from None
    return ChargeResult(False, None, _reason(error))


def outcome_of(intent: dict[str, Any]) -> ChargeResult:
    """A PaymentIntent's outcome as a charge's result."""
    status = str(intent.get("status", ""))
    if status == "succeeded":
        return ChargeResult(True, intent.get("id"))
    error = intent.get("last_payment_error") or {}
    reason = error.get("message") or f"Stripe left the payment {status.replace('_', ' ')}"
    return ChargeResult(False, intent.get("id"), reason)


class StripeGateway:
    """Stripe, with the secret key and (for the tests' localstripe) the API's base URL of the settings."""

    name = NAME

    def __init__(
        self, db: Database, api_key: str, *, webhook_secret: str | None = None, api_base: str | None = None
    ) -> None:
        self.db = db
        self.webhook_secret = webhook_secret
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            # Synchronous calls too: the invoice runs charge from worker threads (`charge`).
            http_client=stripe.HTTPXClient(timeout=TIMEOUT_S, allow_sync_methods=True),
            # The package retries network failures and 409s with the same idempotency key: never a double charge.
            max_network_retries=2,
        )

    async def create_customer(self, account_id: int, *, email: str, name: str) -> str:
        """A new Stripe customer for the account. Idempotent for a day on Stripe's side (the key names the
        account), so two first cards added at once make one customer there."""
        try:
            customer = await self.client.v1.customers.create_async(
                params={"email": email, "name": name, "metadata": {"cloudplane_account_id": str(account_id)}},
                options={"idempotency_key": f"cloudplane-customer-{account_id}"},
            )
        except stripe.StripeError as error:
            raise ProviderError(f"Stripe did not create the customer: {_reason(error)}") from None
        return customer.id

    async def attach(self, customer: str, payment_method: str) -> Card:
        """Attach a PaymentMethod (made by Stripe.js or Elements in the client, or one of Stripe's test ids such as
        `pm_card_visa`) to the customer; the card as Stripe now holds it. A card Stripe refuses is a
        `PaymentFailed` with Stripe's reason; an id Stripe does not know, a `ValidationFailed`."""
        try:
            method = await self.client.v1.payment_methods.attach_async(payment_method, params={"customer": customer})
        except stripe.CardError as error:
            raise PaymentFailed(_reason(error), field="payment_method_id", decline_code=error.code) from None
        except stripe.InvalidRequestError as error:
            if error.http_status == 404:
                raise NotFound("Stripe has no such payment method", field="payment_method_id") from None
            raise ValidationFailed(
                f"Stripe does not accept this payment method: {_reason(error)}", field="payment_method_id"
            ) from None
        except stripe.StripeError as error:
            raise ProviderError(f"Stripe did not save the card: {_reason(error)}") from None
        return _card_of(method)

    async def set_default(self, customer: str, reference: str) -> None:
        """Make the card the one Stripe charges for invoices and off-session payments."""
        try:
            await self.client.v1.customers.update_async(
                customer, params={"invoice_settings": {"default_payment_method": reference}}
            )
        except stripe.StripeError as error:
            raise ProviderError(f"Stripe did not change the default card: {_reason(error)}") from None

    async def detach(self, reference: str) -> None:
        """Remove the card from its customer; a card Stripe no longer knows is already gone."""
        try:
            await self.client.v1.payment_methods.detach_async(reference)
        except stripe.InvalidRequestError as error:
            if error.http_status != 404:
                raise ProviderError(f"Stripe did not remove the card: {_reason(error)}") from None
        except stripe.StripeError as error:
            raise ProviderError(f"Stripe did not remove the card: {_reason(error)}") from None

    def can_charge(self, account_id: int) -> bool:
        """Whether the account has a card to charge off-session: a Stripe customer and a default card (a database
        read, no call to Stripe)."""
        customer, card = _payer(self.db, account_id)
        return customer is not None and card is not None

    async def can_charge_async(self, account_id: int) -> bool:
        """`can_charge`, from the event loop."""
        return await self.db.run(self.can_charge, account_id)

    def charge(
        self, account_id: int, amount: Decimal, currency: str, description: str, idempotency_key: str
    ) -> ChargeResult:
        """Charge the account's default card off-session (the customer is not there to authenticate), confirmed at
        once. Idempotent: the same `idempotency_key` never charges twice (Stripe answers a retry with the first
        outcome). A refusal is a failed result with Stripe's reason; not reaching Stripe raises `ProviderError`
        (the outcome is unknown: retry with the same key, never with a new one). Blocks its thread on Stripe for up
        to TIMEOUT_S: call it from a worker thread, outside any database transaction."""
        params = _intent_params(self.db, account_id, amount, currency, description, idempotency_key)
        if params is None:
            return ChargeResult(False, None, NO_CARD)
        try:
            intent = self.client.v1.payment_intents.create(params=params, options={"idempotency_key": idempotency_key})
        except stripe.StripeError as error:
            return _refused(error)
        return outcome_of(intent.to_dict())

    async def charge_async(
        self, account_id: int, amount: Decimal, currency: str, description: str, idempotency_key: str
    ) -> ChargeResult:
        """`charge`, from the event loop (the package's httpx client: no thread held while Stripe answers)."""
        params = await self.db.run(_intent_params, self.db, account_id, amount, currency, description, idempotency_key)
        if params is None:
            return ChargeResult(False, None, NO_CARD)
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as error:
            return _refused(error)
        return outcome_of(intent.to_dict())

    async def find_charge(self, idempotency_key: str) -> ChargeResult | None:
        """The outcome of the PaymentIntent a charge with this key made, found by its metadata (`cloudplane_charge`),
        or None when Stripe holds none (the charge was never asked for). Stripe's search finds it; a Stripe without
        the search API (localstripe) is read page by page instead. A PaymentIntent still processing raises
        `ProviderError` (ask again later)."""
        try:
            try:
                found = await self.client.v1.payment_intents.search_async(
                    params={"query": f"metadata['cloudplane_charge']:'{idempotency_key}'", "limit": 1}
                )
                intents = [i.to_dict() for i in found.data]
            except stripe.InvalidRequestError as error:
                if error.http_status != 404:
                    raise
                everything = await self.client.v1.payment_intents.list_async(params={"limit": 100})
                intents = [
                    i
                    async for i in (x.to_dict() async for x in everything.auto_paging_iter())
                    if (i.get("metadata") or {}).get("cloudplane_charge") == idempotency_key
                ]
        except stripe.StripeError as error:
            raise ProviderError(f"Stripe could not be asked about the payment now: {_reason(error)}") from None
        if not intents:
            return None
        intent = intents[0]
        if intent.get("status") == "processing":
            raise ProviderError("Stripe is still processing the payment")
        return outcome_of(intent)

    def verify_webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """The event of a webhook delivery whose `Stripe-Signature` is good (HMAC-SHA256 with the endpoint's
        secret, at most five minutes old); anything else is `Unauthorized`."""
        if not self.webhook_secret:
            raise Unauthorized("Stripe webhooks are not configured here (CLOUDPLANE_STRIPE_WEBHOOK_SECRET)")
        try:
            event = stripe.Webhook.construct_event(payload, signature, self.webhook_secret)
        except stripe.SignatureVerificationError:
            raise Unauthorized("Bad Stripe-Signature") from None
        except ValueError:
            raise ValidationFailed("The webhook's body is not a Stripe event", field="body") from None
        return event.to_dict()

    async def check(self) -> None:
        """Raise unless Stripe answers an authenticated call now (the balance: a read without side effects)."""
        await self.client.v1.balance.retrieve_async()


def _card_of(method: stripe.PaymentMethod) -> Card:
    card: dict[str, Any] = method.to_dict().get("card") or {}
    return Card(
        reference=method.id,
        type=method.type,
        brand=card.get("brand"),
        last4=card.get("last4"),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
    )


def gateway_of(settings: Any, db: Database) -> StripeGateway | None:
    """The Stripe gateway the settings configure, or None (payments offline) without a key."""
    if not settings.stripe_api_key:
        return None
    return StripeGateway(
        db, settings.stripe_api_key, webhook_secret=settings.stripe_webhook_secret, api_base=settings.stripe_api_base
    )
