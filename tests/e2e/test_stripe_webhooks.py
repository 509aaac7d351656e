"""A card payment end to end: the service as its own process with Stripe pointed at localstripe, a card saved and
charged for an upgrade, and localstripe's own signed webhook about that payment received, verified and taken once
by /api/v1/webhooks/stripe."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from sqlalchemy import create_engine, select

from cloudplane.db.tables import Charge, StripeEvent
from tests.e2e.conftest import ServiceProcess

SECRET = "whsec_e2e_cloudplane"


def test_localstripe_delivers_a_signed_webhook_for_the_payment(
    service_factory: Callable[..., ServiceProcess], localstripe: str, e2e_database_url: str
) -> None:
    service = service_factory(
        simulator_time_scale="0",
        stripe_api_key="sk_test_e2e",
        stripe_api_base=localstripe,
        stripe_webhook_secret=SECRET,
    )
    service.start()
    # localstripe signs its deliveries with this secret, as a Stripe webhook endpoint does.
    hook = f"e2e{service.port}"
    r = httpx.post(
        f"{localstripe}/_config/webhooks/{hook}",
        data={
            "url": f"{service.url}/api/v1/webhooks/stripe",
            "secret": SECRET,
            "events[0]": "payment_intent.succeeded",
        },
    )
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {service.api_key}"}
    r = httpx.post(
        f"{service.url}/api/v1/billing/payment-methods", json={"payment_method_id": "pm_card_visa"}, headers=headers
    )
    assert r.status_code == 201, r.text
    r = httpx.put(f"{service.url}/api/v1/billing/subscription", json={"tier": "pro"}, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["amount_charged"] == "20.00", r.text

    engine = create_engine(e2e_database_url)
    try:
        with engine.connect() as conn:
            reference = conn.execute(select(Charge.reference).where(Charge.status == "succeeded")).scalar_one()
        deadline = time.monotonic() + 20  # localstripe posts a second after the payment
        delivered: list[str] = []
        while not delivered and time.monotonic() < deadline:
            with engine.connect() as conn:
                delivered = list(
                    conn.execute(
                        select(StripeEvent.type).where(StripeEvent.type == "payment_intent.succeeded")
                    ).scalars()
                )
            time.sleep(0.1)
    finally:
        engine.dispose()
    assert delivered == ["payment_intent.succeeded"], "".join(service.output[-30:])
    assert reference and reference.startswith("pi_")
    # Its signature was good: an event is kept only once verified, and the delivery was answered 200.
    assert '"route":"/api/v1/webhooks/stripe","status":200' in "".join(service.output)
