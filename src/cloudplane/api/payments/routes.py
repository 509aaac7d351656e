"""Cards (`/billing/payment-methods`, CloudVPS and VibeCaaS bodies alike), the VibeCaaS subscription
(`/billing/subscription`) and Stripe's webhooks (`/webhooks/stripe`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field, model_validator

from cloudplane.api.accounts.schemas import Request as Body
from cloudplane.api.accounts.schemas import errors
from cloudplane.api.cloudvps.envelope import cloudvps_renderer, ok
from cloudplane.api.common.deps import CoreDep, PrincipalDep
from cloudplane.api.common.faces import face_route_class
from cloudplane.api.vibecaas.envelope import vibecaas_renderer
from cloudplane.db.tables import PaymentMethod
from cloudplane.domain.errors import Unauthorized
from cloudplane.domain.tiers import TIERS
from cloudplane.domain.times import iso_z
from cloudplane.services import charges, payment_methods, subscriptions

# Both documents share /billing/payment-methods; errors in the CloudVPS envelope, which VibeCaaS's also reads.
router = APIRouter(route_class=face_route_class(cloudvps_renderer), tags=["Billing"])
vibecaas_router = APIRouter(route_class=face_route_class(vibecaas_renderer), tags=["Billing"])

PaymentMethodId = Annotated[str, Path(min_length=3, max_length=255, pattern=r"^[A-Za-z0-9_]+$")]


class PaymentMethodCreate(Body):
    """CloudVPS: `{payment_method_id, set_as_default}`; VibeCaaS: `{type, token}`. Either names a PaymentMethod
    made by Stripe (Stripe.js or Elements in the client: `pm_...`; in test mode also `pm_card_visa`)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["payment_method_id"],
                    "properties": {"payment_method_id": {"type": "string"}},
                    "not": {"required": ["token"]},
                },
                {
                    "required": ["token"],
                    "properties": {"token": {"type": "string"}},
                    "not": {"required": ["payment_method_id"]},
                },
            ]
        },
    )

    payment_method_id: str | None = Field(default=None, min_length=3, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$")
    set_as_default: bool = False
    type: Literal["card"] | None = None
    token: str | None = Field(default=None, min_length=3, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$")

    @model_validator(mode="after")
    def _one_id(self) -> PaymentMethodCreate:
        sent = {"payment_method_id", "token"} & self.model_fields_set
        if len(sent) != 1 or getattr(self, sent.pop()) is None:
            raise ValueError("send payment_method_id (or, VibeCaaS, type and token): one of them")
        return self

    @property
    def reference(self) -> str:
        return self.payment_method_id or self.token or ""


# The tiers as the request's schema states them (domain/tiers.py TIERS).
Tier = StrEnum("Tier", {tier: tier for tier in TIERS})  # type: ignore[misc]


class SubscriptionUpdate(Body):
    tier: Tier


def method_json(method: PaymentMethod) -> dict[str, Any]:
    return {
        "id": method.reference,
        "type": method.type,
        "brand": method.brand,
        "last4": method.last4,
        "exp_month": method.exp_month,
        "exp_year": method.exp_year,
        "is_default": method.is_default,
        "created_at": iso_z(method.created_at),
    }


@router.get("/billing/payment-methods", responses=errors(401, 429))
async def list_payment_methods(core: CoreDep, principal: PrincipalDep) -> Response:
    """The account's saved cards, the default first."""
    methods = await core.db.run(payment_methods.list_payment_methods, core.db, principal)
    return ok([method_json(m) for m in methods])


@router.post("/billing/payment-methods", status_code=201, responses=errors(400, 401, 402, 404, 409, 422, 429, 502))
async def add_payment_method(body: PaymentMethodCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Save a card at Stripe for the account (its Stripe customer is made with the first card); the first card, or
    one sent with `set_as_default`, becomes the one charged."""
    method = await payment_methods.add_payment_method(
        core, principal, body.reference, set_as_default=body.set_as_default
    )
    return ok(method_json(method), status_code=201, message="Payment method added")


@router.delete("/billing/payment-methods/{payment_method_id}", responses=errors(401, 404, 409, 422, 429, 502))
async def remove_payment_method(payment_method_id: PaymentMethodId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Remove a card; when it was the default, the newest remaining card becomes it."""
    await payment_methods.remove_payment_method(core, principal, payment_method_id)
    return ok({"id": payment_method_id, "deleted": True}, message="Payment method removed")


def subscription_json(view: subscriptions.SubscriptionView) -> dict[str, Any]:
    card = view.payment_method
    return {
        "tier": view.tier,
        "status": view.status,
        "current_period_start": iso_z(view.current_period_start),
        "current_period_end": iso_z(view.current_period_end),
        "cancel_at_period_end": view.cancel_at_period_end,
        "pending_tier": view.pending_tier,
        "monthly_price": str(view.monthly_price),
        "currency": view.currency,
        "payment_method": None if card is None else {"type": card.type, "last4": card.last4, "brand": card.brand},
        **({} if view.amount_charged is None else {"amount_charged": str(view.amount_charged)}),
    }


@vibecaas_router.get("/billing/subscription", responses=errors(401, 429))
async def get_subscription(core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    """The account's tier, its billing period and what changes at its end."""
    return JSONResponse(subscription_json(await core.db.run(subscriptions.get_subscription, core.db, principal)))


@vibecaas_router.put("/billing/subscription", responses=errors(400, 401, 402, 409, 422, 429, 502))
async def update_subscription(body: SubscriptionUpdate, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    """Change tier: an upgrade applies now and charges the default card the prorated difference for the rest of
    the period (402 `PAYMENT_REQUIRED` without a card, `PAYMENT_ERROR` when the card is refused); a downgrade
    applies at the end of the period. Asking for the current tier withdraws a pending downgrade or cancellation."""
    return JSONResponse(subscription_json(await subscriptions.change_tier(core, principal, str(body.tier))))


@vibecaas_router.delete("/billing/subscription", responses=errors(401, 409, 429))
async def cancel_subscription(core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    """Cancel at the end of the period (`cancel_at_period_end`): the tier holds until then, free after."""
    return JSONResponse(subscription_json(await subscriptions.cancel(core, principal)))


@router.post("/webhooks/stripe", responses=errors(401, 422), include_in_schema=False)
async def stripe_webhook(request: Request, core: CoreDep) -> JSONResponse:
    """Stripe's events, their `Stripe-Signature` checked with the endpoint's secret; each taken once."""
    if core.stripe is None:
        raise Unauthorized("Stripe webhooks are not configured here (CLOUDPLANE_STRIPE_API_KEY)")
    event = core.stripe.verify_webhook(await request.body(), request.headers.get("stripe-signature"))
    outcome = await core.db.run(charges.handle_stripe_event, core.db, event)
    return JSONResponse({"received": True, "outcome": outcome})
