"""Card payments through Stripe and VibeCaaS subscriptions, against localstripe (a stateful fake of Stripe's API)
run by these tests as a process on a loopback port: customers, cards, off-session charges and their events,
Stripe's signed webhooks, upgrades paid with proration, downgrades and cancellations at the period's end, and
quotas and rate limits that follow the tier at once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select, update

from cloudplane.api.common.ratelimit import RateLimiter
from cloudplane.db.tables import Account, Charge, Subscription, utcnow
from cloudplane.services import charges, subscriptions
from cloudplane.services.stripe_gateway import StripeGateway
from cloudplane.workflows import schedules
from cloudplane.workflows.schedules import tick_of
from cloudplane.workflows.subscriptions import end_periods
from tests.conftest import Tenant, eventually
from tests.integration.conftest import API_KEY, WEBHOOK_SECRET
from tests.integration.test_events import events_of

V1 = "/api/v1"
JOB = next(j for j in schedules.jobs() if j.body is end_periods)
HOUR = timedelta(hours=1)
# Each test that moves a subscription's period to a chosen end takes hours of its own, so no two share a tick.
_hours = itertools.count(1)


async def add_card(client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(f"{V1}/billing/payment-methods", json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["data"]


async def cards(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    r = await client.get(f"{V1}/billing/payment-methods", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def subscription(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    r = await client.get(f"{V1}/billing/subscription", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def put_tier(client: httpx.AsyncClient, tenant: Tenant, tier: str) -> httpx.Response:
    return await client.put(f"{V1}/billing/subscription", json={"tier": tier}, headers=tenant.headers)


def tier_of(core: Any, tenant: Tenant) -> str:
    with core.db.read() as s:
        return s.execute(select(Account.tier).where(Account.id == tenant.principal.account_id)).scalar_one()


def signed(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A Stripe-Signature header as Stripe makes it: HMAC-SHA256 of `{t}.{body}` with the endpoint's secret."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


async def test_the_first_card_makes_the_customer_shown_in_the_profile(client, tenant, stripe_on, stripe_api) -> None:
    r = await client.get(f"{V1}/users/profile", headers=tenant.headers)
    assert r.json()["data"]["stripe_customer_id"] is None
    card = await add_card(client, tenant, {"payment_method_id": "pm_card_visa", "set_as_default": True})
    assert card["id"].startswith("pm_") and card["id"] != "pm_card_visa"
    assert (card["type"], card["brand"], card["last4"], card["is_default"]) == ("card", "visa", "4242", True)
    customer = (await client.get(f"{V1}/users/profile", headers=tenant.headers)).json()["data"]["stripe_customer_id"]
    assert customer and customer.startswith("cus_")
    # Stripe holds the card on that customer, as its default.
    held = (await stripe_api.get(f"/v1/customers/{customer}")).json()
    assert held["invoice_settings"]["default_payment_method"] == card["id"]
    assert held["email"] == tenant.email
    assert (await stripe_api.get(f"/v1/payment_methods/{card['id']}")).json()["customer"] == customer
    # A second card reuses the customer.
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    again = (await client.get(f"{V1}/users/profile", headers=tenant.headers)).json()["data"]["stripe_customer_id"]
    assert again == customer


async def test_cards_in_both_bodies_are_listed_made_default_and_removed(
    client, core, make_tenant, stripe_on, stripe_api
) -> None:
    tenant = make_tenant()
    first = await add_card(client, tenant, {"type": "card", "token": "pm_card_visa"})  # VibeCaaS
    second = await add_card(client, tenant, {"payment_method_id": "pm_card_visa", "set_as_default": False})
    assert first["is_default"] is True and second["is_default"] is False  # the first card is the default
    assert [c["id"] for c in await cards(client, tenant)] == [first["id"], second["id"]]

    # Adding a saved card again with set_as_default makes it the default, here and at Stripe.
    made = await add_card(client, tenant, {"payment_method_id": second["id"], "set_as_default": True})
    assert made["id"] == second["id"] and made["is_default"] is True
    listed = await cards(client, tenant)
    assert [(c["id"], c["is_default"]) for c in listed] == [(second["id"], True), (first["id"], False)]
    customer = (await client.get(f"{V1}/users/profile", headers=tenant.headers)).json()["data"]["stripe_customer_id"]
    stripe_default = (await stripe_api.get(f"/v1/customers/{customer}")).json()["invoice_settings"]
    assert stripe_default["default_payment_method"] == second["id"]

    # Another tenant sees none of them and can remove none.
    intruder = make_tenant()
    assert await cards(client, intruder) == []
    r = await client.delete(f"{V1}/billing/payment-methods/{second['id']}", headers=intruder.headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = await client.post(
        f"{V1}/billing/payment-methods", json={"payment_method_id": first["id"]}, headers=intruder.headers
    )
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "payment_method_id", r.text

    # Removing the default detaches it at Stripe and makes the other card the default.
    r = await client.delete(f"{V1}/billing/payment-methods/{second['id']}", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    assert (await stripe_api.get(f"/v1/payment_methods/{second['id']}")).json()["customer"] is None
    assert [(c["id"], c["is_default"]) for c in await cards(client, tenant)] == [(first["id"], True)]
    stripe_default = (await stripe_api.get(f"/v1/customers/{customer}")).json()["invoice_settings"]
    assert stripe_default["default_payment_method"] == first["id"]
    r = await client.delete(f"{V1}/billing/payment-methods/{second['id']}", headers=tenant.headers)
    assert r.status_code == 404
    kinds = [e.type for e in events_of(core, tenant, "payment_method.")]
    assert kinds == ["payment_method.added", "payment_method.added", "payment_method.removed"]


async def test_bad_card_bodies_and_a_card_stripe_refuses(client, tenant, stripe_on) -> None:
    for body in (
        {},
        {"payment_method_id": "pm_card_visa", "token": "pm_card_visa"},
        {"type": "bank", "token": "pm_card_visa"},
        {"payment_method_id": "card_123"},
        {"payment_method_id": "pm_card_visa", "owner_id": 1},
    ):
        r = await client.post(f"{V1}/billing/payment-methods", json=body, headers=tenant.headers)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["success"] is False
    # Stripe declines attaching this card: its reason, in the PAYMENT_ERROR.
    r = await client.post(
        f"{V1}/billing/payment-methods",
        json={"payment_method_id": "pm_card_visa_chargeDeclined"},
        headers=tenant.headers,
    )
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == "PAYMENT_ERROR" and r.json()["error"]["message"] == "Your card was declined."
    assert await cards(client, tenant) == []
    # A payment method Stripe does not know.
    r = await client.post(
        f"{V1}/billing/payment-methods", json={"payment_method_id": "pm_nothing"}, headers=tenant.headers
    )
    assert r.status_code == 404 and r.json()["error"]["details"]["field"] == "payment_method_id", r.text


async def test_an_off_session_charge_succeeds_with_its_event(client, core, tenant, stripe_on, stripe_api) -> None:
    card = await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    charge_id, result = await charges.pay(
        core,
        account_id=tenant.principal.account_id,
        amount=Decimal("12.34"),
        currency="USD",
        description="Invoice INV-2026-001",
        purpose="test",
    )
    assert result.succeeded and result.reference and result.reference.startswith("pi_"), result
    intent = (await stripe_api.get(f"/v1/payment_intents/{result.reference}")).json()
    assert (intent["amount"], intent["currency"], intent["status"]) == (1234, "usd", "succeeded")
    assert intent["payment_method"] == card["id"]
    [event] = events_of(core, tenant, "payment.succeeded")
    assert event.target_id == str(charge_id)
    assert event.data["amount"] == "12.34" and event.data["reference"] == result.reference
    with core.db.read() as s:
        row = s.get(Charge, charge_id)
    assert row is not None and (row.status, row.amount) == ("succeeded", Decimal("12.34"))


async def test_a_declined_charge_is_a_payment_error_with_stripes_reason(client, core, tenant, stripe_on) -> None:
    # This card attaches, but every charge on it is declined.
    await add_card(client, tenant, {"payment_method_id": "pm_card_chargeCustomerFail"})
    r = await put_tier(client, tenant, "pro")
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == "PAYMENT_ERROR" and r.json()["error"]["message"] == "Your card was declined."
    [failed] = events_of(core, tenant, "payment.failed")
    assert failed.data["failure_reason"] == "Your card was declined." and failed.data["amount"] == "20.00"
    assert events_of(core, tenant, "payment.succeeded") == events_of(core, tenant, "subscription.updated") == []
    assert tier_of(core, tenant) == "free"
    # The subscription is free to change again (the refused charge let go of it).
    assert (await subscription(client, tenant))["tier"] == "free"
    r = await put_tier(client, tenant, "pro")
    assert r.status_code == 402 and r.json()["error"]["code"] == "PAYMENT_ERROR"


async def test_stripe_webhooks_need_a_good_signature_and_count_once(client, core, tenant, stripe_on) -> None:
    # A charge this process recorded but never heard back about (it died after asking Stripe).
    with core.db.write() as s:
        pending = charges.begin(
            s,
            account_id=tenant.principal.account_id,
            gateway="stripe",
            amount=Decimal("5.00"),
            currency="USD",
            description="Invoice INV-2026-002",
            purpose="test",
        )
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "data": {
            "object": {
                "id": "pi_webhooktest",
                "object": "payment_intent",
                "amount": 500,
                "status": "succeeded",
                "metadata": {"cloudplane_charge": pending.idempotency_key},
            }
        },
    }
    payload = json.dumps(event).encode()
    url = f"{V1}/webhooks/stripe"
    for bad in (
        None,
        signed(payload, secret="whsec_someone_else"),
        signed(payload, at=int(time.time()) - 600),  # older than Stripe's five minutes: a replay
        signed(payload + b" "),
        "t=1,v1=00",
    ):
        headers = {"content-type": "application/json"} | ({"stripe-signature": bad} if bad else {})
        r = await client.post(url, content=payload, headers=headers)
        assert r.status_code == 401, (bad, r.text)
    assert events_of(core, tenant, "payment.succeeded") == []

    headers = {"content-type": "application/json", "stripe-signature": signed(payload)}
    r = await client.post(url, content=payload, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"] == "settled", r.text
    [succeeded] = events_of(core, tenant, "payment.succeeded")
    assert succeeded.data["reference"] == "pi_webhooktest" and succeeded.data["amount"] == "5.00"
    # Stripe delivers at least once: the same event again is acknowledged and changes nothing.
    r = await client.post(url, content=payload, headers={**headers, "stripe-signature": signed(payload)})
    assert r.status_code == 200 and r.json()["outcome"] == "duplicate", r.text
    assert len(events_of(core, tenant, "payment.succeeded")) == 1
    # Events it has no use for are acknowledged too.
    other = json.dumps({**event, "id": f"evt_{uuid.uuid4().hex}", "type": "customer.created"}).encode()
    r = await client.post(url, content=other, headers={**headers, "stripe-signature": signed(other)})
    assert r.status_code == 200 and r.json()["outcome"] == "ignored"


def set_period(core: Any, tenant: Tenant, *, ago: timedelta, left: timedelta) -> tuple[datetime, datetime]:
    """Put the account's period around now, ending on an hour no other test's period ends on."""
    end = tick_of(utcnow() + left, HOUR) + HOUR * next(_hours)
    start = end - left - ago
    with core.db.write() as s:
        s.execute(
            update(Subscription)
            .where(Subscription.account_id == tenant.principal.account_id)
            .values(current_period_start=start, current_period_end=end)
        )
    return start, end


async def test_an_upgrade_is_charged_prorated_and_applies_at_once(client, core, tenant, stripe_on, stripe_api) -> None:
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    before = await subscription(client, tenant)
    assert (before["tier"], before["monthly_price"], before["cancel_at_period_end"]) == ("free", "0.00", False)
    assert before["payment_method"] == {"type": "card", "last4": "4242", "brand": "visa"}

    # From free, a paid period starts now at the whole price.
    r = await put_tier(client, tenant, "hobby")
    assert r.status_code == 200, r.text
    hobby = r.json()
    assert (hobby["tier"], hobby["amount_charged"], hobby["monthly_price"]) == ("hobby", "7.00", "7.00")
    assert tier_of(core, tenant) == "hobby"

    # Two thirds of a 30-day period left: hobby (7.00) to team (50.00) costs 43.00 * 2/3 = 28.67.
    with core.db.write() as s:
        s.execute(
            update(Subscription)
            .where(Subscription.account_id == tenant.principal.account_id)
            .values(
                current_period_start=utcnow() - timedelta(days=10), current_period_end=utcnow() + timedelta(days=20)
            )
        )
    r = await put_tier(client, tenant, "team")
    assert r.status_code == 200, r.text
    assert (r.json()["tier"], r.json()["amount_charged"]) == ("team", "28.67")
    paid = events_of(core, tenant, "payment.succeeded")
    assert [e.data["amount"] for e in paid] == ["7.00", "28.67"]
    intent = (await stripe_api.get(f"/v1/payment_intents/{paid[-1].data['reference']}")).json()
    assert (intent["amount"], intent["status"]) == (2867, "succeeded")
    updates = events_of(core, tenant, "subscription.updated")
    assert [(e.data["from"], e.data["tier"], e.data["reason"]) for e in updates] == [
        ("free", "hobby", "upgrade"),
        ("hobby", "team", "upgrade"),
    ]
    me = (await client.get(f"{V1}/users/me", headers=tenant.headers)).json()
    assert me["tier"] == "team" and me["quotas"]["max_apps"] == 50


async def test_a_paid_tier_without_a_way_to_pay_is_402(client, core, tenant, stripe_on) -> None:
    r = await put_tier(client, tenant, "pro")
    assert r.status_code == 402, r.text
    error = r.json()["error"]  # the VibeCaaS envelope
    assert error["code"] == "PAYMENT_REQUIRED" and error["details"]["field"] == "tier"
    assert "add a card" in error["message"]
    assert tier_of(core, tenant) == "free"
    r = await put_tier(client, tenant, "platinum")
    assert r.status_code == 422 and r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_with_payments_offline_paid_tiers_and_cards_are_refused(client, core, tenant) -> None:
    assert core.stripe is None
    r = await put_tier(client, tenant, "hobby")
    assert r.status_code == 402 and r.json()["error"]["code"] == "PAYMENT_REQUIRED", r.text
    r = await client.post(
        f"{V1}/billing/payment-methods", json={"payment_method_id": "pm_card_visa"}, headers=tenant.headers
    )
    assert r.status_code == 409 and "Stripe" in r.json()["error"]["message"], r.text
    assert await cards(client, tenant) == []
    r = await client.post(f"{V1}/webhooks/stripe", content=b"{}", headers={"stripe-signature": "t=1,v1=00"})
    assert r.status_code == 401


async def upgraded(client: httpx.AsyncClient, tenant: Tenant, tier: str) -> None:
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    r = await put_tier(client, tenant, tier)
    assert r.status_code == 200, r.text


async def test_a_downgrade_waits_for_the_end_of_the_period(client, core, tenant, stripe_on) -> None:
    await upgraded(client, tenant, "pro")
    _, end = set_period(core, tenant, ago=timedelta(days=5), left=timedelta(days=25))
    r = await put_tier(client, tenant, "hobby")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["tier"], body["pending_tier"], body["cancel_at_period_end"]) == ("pro", "hobby", False)
    assert "amount_charged" not in body
    [scheduled] = events_of(core, tenant, "subscription.update_scheduled")
    assert scheduled.data["pending_tier"] == "hobby"
    # The hour before the end changes nothing; the end's own tick moves the account to hobby for a new period.
    schedules.run_tick(core, JOB, end - HOUR, "test")
    assert tier_of(core, tenant) == "pro"
    schedules.run_tick(core, JOB, end, "test")
    assert tier_of(core, tenant) == "hobby"
    after = await subscription(client, tenant)
    assert (after["tier"], after["pending_tier"], after["monthly_price"]) == ("hobby", None, "7.00")
    assert after["current_period_start"] == end.isoformat().replace("+00:00", "Z")
    assert events_of(core, tenant, "subscription.updated")[-1].data == {
        "from": "pro",
        "tier": "hobby",
        "reason": "period_end",
    }
    assert len(events_of(core, tenant, "payment.succeeded")) == 1  # a downgrade charges nothing


async def test_a_cancellation_keeps_the_tier_until_the_period_ends(client, core, tenant, stripe_on) -> None:
    await upgraded(client, tenant, "hobby")
    _, end = set_period(core, tenant, ago=timedelta(days=1), left=timedelta(days=29))
    r = await client.delete(f"{V1}/billing/subscription", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["tier"], r.json()["cancel_at_period_end"], r.json()["pending_tier"]) == ("hobby", True, "free")
    # Asking for the current tier again withdraws the cancellation; cancel once more.
    r = await put_tier(client, tenant, "hobby")
    assert r.status_code == 200 and r.json()["cancel_at_period_end"] is False, r.text
    r = await client.delete(f"{V1}/billing/subscription", headers=tenant.headers)
    assert r.json()["cancel_at_period_end"] is True
    schedules.run_tick(core, JOB, end, "test")
    after = await subscription(client, tenant)
    assert (after["tier"], after["cancel_at_period_end"], after["pending_tier"]) == ("free", False, None)
    with core.db.read() as s:
        assert s.get(Subscription, tenant.principal.account_id) is None


async def test_quotas_and_rate_limits_follow_the_tier_at_once(app, client, core, make_tenant, stripe_on) -> None:
    tenant = make_tenant()
    saved = app.state.ratelimiter
    app.state.ratelimiter = RateLimiter()
    try:
        r = await client.get(f"{V1}/users/me", headers=tenant.headers)
        assert r.headers["x-ratelimit-limit"] == "60" and r.json()["quotas"]["max_apps"] == 3
        await upgraded(client, tenant, "pro")
        # The very next request: the cached principal (10 s) was forgotten with the change.
        r = await client.get(f"{V1}/users/me", headers=tenant.headers)
        assert r.headers["x-ratelimit-limit"] == "300" and r.json()["quotas"]["max_apps"] == 20
        _, end = set_period(core, tenant, ago=timedelta(days=2), left=timedelta(days=28))
        assert (await client.delete(f"{V1}/billing/subscription", headers=tenant.headers)).status_code == 200
        schedules.run_tick(core, JOB, end, "test")

        async def limit() -> str:
            return (await client.get(f"{V1}/users/me", headers=tenant.headers)).headers["x-ratelimit-limit"]

        assert await eventually(limit, lambda value: value == "60", timeout=5) == "60"
        # An admin's change of tier holds from the next request too, and drops what was due at the period's end.
        assert (await put_tier(client, tenant, "team")).status_code == 200
        _, end = set_period(core, tenant, ago=timedelta(days=2), left=timedelta(days=28))
        assert (await put_tier(client, tenant, "hobby")).json()["pending_tier"] == "hobby"
        admin = make_tenant("admin")
        user = f"user-{tenant.principal.user_id}"
        r = await client.put(f"{V1}/admin/users/{user}/tier", json={"tier": "enterprise"}, headers=admin.headers)
        assert r.status_code == 200, r.text
        r = await client.get(f"{V1}/users/me", headers=tenant.headers)
        assert "x-ratelimit-limit" not in r.headers and r.json()["quotas"]["max_apps"] == 1000  # unlimited
        assert (await subscription(client, tenant))["pending_tier"] is None
        schedules.run_tick(core, JOB, end, "test")
        assert tier_of(core, tenant) == "enterprise"
    finally:
        app.state.ratelimiter = saved


async def test_admin_health_checks_stripe(client, make_tenant, stripe_on) -> None:
    admin = make_tenant("admin")
    r = await client.get(f"{V1}/admin/system/health", headers=admin.headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["services"]["stripe"] == "online" and data["checks"]["stripe"]["latency_ms"] >= 0
    stripe_on.client = StripeGateway(stripe_on.db, API_KEY, api_base="http://127.0.0.1:1").client
    data = (await client.get(f"{V1}/admin/system/health", headers=admin.headers)).json()["data"]
    assert data["services"]["stripe"] == "offline" and data["status"] == "degraded"


async def test_an_upgrade_whose_request_died_is_paid_for_by_the_next_change(client, core, tenant, stripe_on) -> None:
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    # An upgrade claimed and recorded, whose request died before it heard from Stripe.
    charge = subscriptions._claim(core.db, tenant.principal.account_id, "pro", "free", utcnow(), "stripe")
    r = await put_tier(client, tenant, "team")
    assert r.status_code == 409 and r.json()["error"]["code"] == "CONFLICT", r.text  # it may still be under way
    with core.db.write() as s:
        s.execute(
            update(Charge).where(Charge.id == charge.id).values(created_at=utcnow() - subscriptions.RESUME_AFTER * 2)
        )
    # The next change asks Stripe for that charge (with its key), applies it, then does what it was asked.
    r = await put_tier(client, tenant, "pro")
    assert r.status_code == 200 and r.json()["tier"] == "pro", r.text
    [paid] = events_of(core, tenant, "payment.succeeded")
    assert paid.target_id == str(charge.id) and paid.data["amount"] == "20.00"
    with core.db.read() as s:
        assert s.get(Subscription, tenant.principal.account_id).charge_id is None


async def test_upgrades_at_once_charge_once(client, core, tenant, stripe_on) -> None:
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    replies = await asyncio.gather(*(put_tier(client, tenant, "pro") for _ in range(5)))
    # One is paid for; the others find it under way (409) or done (200, nothing more to pay).
    assert {r.status_code for r in replies} <= {200, 409} and 200 in {r.status_code for r in replies}
    assert [r.json().get("amount_charged") for r in replies if r.status_code == 200].count("20.00") == 1
    [paid] = events_of(core, tenant, "payment.succeeded")
    assert paid.data["amount"] == "20.00" and tier_of(core, tenant) == "pro"
