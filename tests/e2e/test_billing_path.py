"""Issue 12's "done when" path for money, end to end: a new user registers with the real service (its own process,
Stripe pointed at localstripe, webhooks to a receiver process), saves a card, runs a server for a simulated month,
sees the usage, gets an invoice whose PDF reads right and that is charged to the card through Stripe, and the
receiver gets invoice.created, payment.succeeded and invoice.paid with both signatures verified.

The clock is moved as tests/integration/test_billing.py moves it: this test runs the metering and invoice jobs'
ticks for the hours and the 1st still to come, against the service's database, with a core of its own (as another
process of the service would: each tick runs once, whichever process takes it). What the invoice tick does after its
commit (the card charge) is run here, where the service's engine would run it."""

from __future__ import annotations

import asyncio
import io
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from pypdf import PdfReader

from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.services import billing
from cloudplane.workflows import schedules
from tests.e2e.test_webhooks import WEBHOOK_SETTINGS, add_endpoint, vps_status, wait_for
from tests.integration.test_billing import job, meter_until
from tests.webhook_receiver import receiver

STRIPE_KEY = "sk_test_e2e_billing"


def test_a_month_of_a_server_is_invoiced_and_paid_by_card_with_every_event_delivered(
    service_factory, e2e_database_url: str, localstripe: str, tmp_path: Path
) -> None:
    stripe = {"stripe_api_key": STRIPE_KEY, "stripe_api_base": localstripe}
    service = service_factory(**WEBHOOK_SETTINGS, **stripe, billing_tax_rate="0.1")
    service.start(timeout=180)  # a loaded machine starts it slowly
    admin = {"Authorization": f"Bearer {service.api_key}"}
    with (
        receiver(tmp_path / "receiver") as hook,
        httpx.Client(base_url=service.url, headers=admin, timeout=30) as operator,
        httpx.Client(base_url=service.url, timeout=30) as c,
    ):
        add_endpoint(operator, hook)
        email = f"payer-{time.monotonic_ns()}@example.com"
        r = c.post("/api/v1/auth/register", json={"name": "Pat Payer", "email": email, "password": "a-good-password"})
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/auth/login", json={"email": email, "password": "a-good-password"})
        assert r.status_code == 200, r.text
        body = r.json()
        token = body.get("access_token") or body["data"]["access_token"]
        c.headers["Authorization"] = f"Bearer {token}"

        r = c.post("/api/v1/billing/payment-methods", json={"payment_method_id": "pm_card_visa"})
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/vps", json={"name": "month-long", "plan_id": "plan-professional"})
        assert r.status_code == 201, r.text
        vps_id = r.json()["data"]["id"]
        wait_for(lambda: vps_status(c, vps_id) == "running")

        # The month passes: every hour to its end metered, then the run on the 1st, by a core of this test's.
        core = Core.build(Settings(database_url=e2e_database_url, **stripe))
        try:
            _, month_end = billing.month_of(datetime.now(UTC))
            meter_until(core, month_end + timedelta(minutes=30))

            usage = c.get("/api/v1/billing/usage").json()["data"]
            [server_usage] = [s for s in usage["services"] if s["name"] == "month-long"]
            assert Decimal(str(server_usage["cost"])) > 0, usage

            ran = schedules.run_tick(core, job("billing-invoices"), month_end, "e2e")
            assert ran is not None and "1 to charge to a card" in ran.summary, ran
            assert ran.then is not None
            asyncio.run(ran.then())
        finally:
            core.db.dispose()

        r = c.get("/api/v1/billing/invoices")
        assert r.status_code == 200, r.text
        [invoice] = r.json()["data"]
        assert invoice["status"] == "paid", invoice
        pdf = c.get(f"/api/v1/billing/invoices/{invoice['id']}/pdf")
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
        assert invoice["invoice_number"] in text and "Pat Payer" in text and email in text
        [line] = invoice["items"]
        assert line["description"] in text and f"{Decimal(str(invoice['amount'])):.2f}" in text

        expected = {"invoice.created", "payment.succeeded", "invoice.paid"}
        wait_for(lambda: expected <= {g["event"] for g in hook.received()})
        got = [g for g in hook.received() if g["event"] in expected]
        assert all(g["document_check"] == "true" and g["standard_check"] == "true" for g in got), got
        paid = next(json.loads(g["body"]) for g in got if g["event"] == "payment.succeeded")
        assert paid["data"]["amount"] == f"{Decimal(str(invoice['amount'])):.2f}", paid
