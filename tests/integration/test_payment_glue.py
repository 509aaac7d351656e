"""Where billing meets Stripe, against localstripe run by these tests: an invoice the account's credit does not cover
charged off-session to the default card (paid, or left open for dunning with Stripe's reason), a paid subscription's
renewal billed on the month's invoice, a charge left pending by a dead process settled by the sweep from what Stripe
holds, and the admin health check of the SMTP server."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from cloudplane.db.tables import Account, Charge, Invoice, UsageRecord, utcnow
from cloudplane.services import billing, charges
from cloudplane.workflows import schedules
from cloudplane.workflows.billing import sweep_charges
from tests.conftest import Tenant, eventually
from tests.integration.conftest import Inbox, free_port
from tests.integration.test_events import events_of
from tests.integration.test_stripe_payments import JOB, add_card, put_tier, set_period

V1 = "/api/v1"
HOUR = timedelta(hours=1)
# Each test invoices a month of its own, long past, so no other test's usage is in it.
_months = itertools.count(1)


def past_month() -> datetime:
    n = next(_months)
    return datetime(2021 + n // 12, 1 + n % 12, 1, tzinfo=UTC)


def owe(core: Any, tenant: Tenant, month: datetime, amount: str) -> None:
    """An hour of a server in `month` costing `amount`, as the metering writes it."""
    with core.db.write() as s:
        s.execute(
            insert(UsageRecord),
            {
                "account_id": tenant.principal.account_id,
                "resource_type": "server",
                "resource_id": f"glue-{tenant.principal.account_id}-{month:%Y%m}",
                "hour_at": month + timedelta(days=3),
                "label": "Web Server 01",
                "plan": "basic-1gb",
                "running_s": 3600,
                "stopped_s": 0,
                "storage_gb_s": 0,
                "gpu_s": 0,
                "transfer_bytes": 0,
                "cost_micros": int(Decimal(amount) * 1_000_000),
                "monthly_cap": None,
                "transfer_allowance_gb": None,
            },
        )


def invoice_run(core: Any, make_tenant: Any, month: datetime) -> list[billing.InvoiceView]:
    return billing.run_invoices(core, make_tenant("admin").principal, f"{month:%Y-%m}")


def charges_of(core: Any, tenant: Tenant) -> list[Charge]:
    with core.db.read() as s:
        return list(
            s.scalars(select(Charge).where(Charge.account_id == tenant.principal.account_id).order_by(Charge.id))
        )


def invoice_status(core: Any, invoice_id: int) -> str:
    with core.db.read() as s:
        return s.execute(select(Invoice.status).where(Invoice.id == invoice_id)).scalar_one()


async def test_an_invoice_credit_does_not_cover_is_charged_to_the_card_once(
    client, core, make_tenant, stripe_on, stripe_api
) -> None:
    tenant, month = make_tenant(), past_month()
    card = await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    owe(core, tenant, month, "12.50")
    [made] = invoice_run(core, make_tenant, month)
    assert made.status == "paid"  # charged after the invoice's commit, before the run answered

    [charge] = charges_of(core, tenant)
    assert charge.idempotency_key == f"cloudplane-invoice-{made.id}-1" and charge.status == "succeeded"
    intent = (await stripe_api.get(f"/v1/payment_intents/{charge.reference}")).json()
    assert (intent["amount"], intent["status"], intent["payment_method"]) == (1250, "succeeded", card["id"])
    assert intent["metadata"]["cloudplane_charge"] == charge.idempotency_key
    [paid] = events_of(core, tenant, "invoice.paid")
    assert paid.data["gateway"] == "stripe" and paid.data["reference"] == charge.reference
    [succeeded] = events_of(core, tenant, "payment.succeeded")
    assert succeeded.data["amount"] == "12.50" and succeeded.data["purpose"] == "invoice"
    r = await client.get(f"{V1}/billing/invoices/inv-{made.id}", headers=tenant.headers)
    assert r.json()["data"]["status"] == "paid", r.text

    # Asked again (a retry after a crash), the charge is settled already: nothing more is taken.
    billing.pay_by_card(core, [charge.id])
    with core.db.write() as s:
        assert billing.charge_by_card(core, s, made.id) is None
    assert len(charges_of(core, tenant)) == 1


async def test_credit_pays_first_and_no_card_is_charged(client, core, make_tenant, stripe_on) -> None:
    tenant, month = make_tenant(), past_month()
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    with core.db.write() as s:
        s.execute(update(Account).where(Account.id == tenant.principal.account_id).values(balance=Decimal("20")))
    owe(core, tenant, month, "12.50")
    [made] = invoice_run(core, make_tenant, month)
    assert made.status == "paid" and charges_of(core, tenant) == []
    assert [e.data["gateway"] for e in events_of(core, tenant, "invoice.paid")] == ["offline"]


async def test_a_declined_card_leaves_the_invoice_open_for_dunning_with_stripes_reason(
    client, core, make_tenant, stripe_on
) -> None:
    tenant, month = make_tenant(), past_month()
    await add_card(client, tenant, {"payment_method_id": "pm_card_chargeCustomerFail"})
    owe(core, tenant, month, "9.99")
    [made] = invoice_run(core, make_tenant, month)
    assert invoice_status(core, made.id) == "pending"
    [failed] = events_of(core, tenant, "payment.failed")
    assert failed.data["failure_reason"] == "Your card was declined." and failed.data["amount"] == "9.99"
    assert events_of(core, tenant, "invoice.paid") == []
    # Dunning proceeds as for any unpaid invoice.
    late = made.due_at + timedelta(days=core.settings.billing_grace_days, hours=1)
    with core.db.write() as s:
        billing.check_overdue(core, s, late)
    assert invoice_status(core, made.id) == "overdue"
    # A new default card pays what is open at once: a new attempt with a key of its own (Stripe would answer the
    # old key with the old refusal).
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa", "set_as_default": True})
    assert invoice_status(core, made.id) == "paid"
    assert [(c.idempotency_key.rsplit("-", 1)[1], c.status) for c in charges_of(core, tenant)] == [
        ("1", "failed"),
        ("2", "succeeded"),
    ]


async def test_without_a_card_the_invoice_waits_and_payments_offline_charge_nothing(
    client, core, make_tenant, stripe_on
) -> None:
    tenant, month = make_tenant(), past_month()
    owe(core, tenant, month, "5.00")
    [made] = invoice_run(core, make_tenant, month)
    assert invoice_status(core, made.id) == "pending" and charges_of(core, tenant) == []
    assert not stripe_on.can_charge(tenant.principal.account_id)
    with core.db.read() as s:
        assert not billing.OfflineGateway(s).can_charge(tenant.principal.account_id)


async def test_a_paid_subscription_renewal_is_billed_on_the_months_invoice(
    client, core, make_tenant, stripe_on, stripe_api
) -> None:
    tenant = make_tenant()
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    assert (await put_tier(client, tenant, "pro")).status_code == 200  # the first period, paid at once
    start, end = set_period(core, tenant, ago=timedelta(days=29), left=timedelta(hours=2))
    # The clock moved over the period's end: the job renews it, and the renewal is owed from the new period's start.
    assert schedules.run_tick(core, JOB, end, "test") is not None
    [renewed] = events_of(core, tenant, "subscription.renewed")
    assert renewed.data["amount"] == "20.00" and renewed.data["tier"] == "pro"
    usage = billing.current_usage(core, tenant.principal, now=end)
    [line] = [s for s in usage.services if s.resource_type == "subscription"]
    assert line.cost == Decimal("20.00") and line.label.startswith(f"Pro subscription, {end:%Y-%m-%d} to ")
    # Run again (a second process, a retry), it bills nothing twice.
    schedules.run_tick(core, JOB, end, "test")
    assert len(billing.current_usage(core, tenant.principal, now=end).services) == 1

    # The month's invoice carries it, and the card pays it.
    month_start, month_end = billing.month_of(end)
    with core.db.write() as s:
        invoice_id = billing.invoice_account(core, s, tenant.principal.account_id, month_start, month_end)
        assert invoice_id is not None
        to_charge = billing.fresh_charges(s, [invoice_id])
    billing.pay_by_card(core, to_charge)
    r = await client.get(f"{V1}/billing/invoices/inv-{invoice_id}", headers=tenant.headers)
    invoice = r.json()["data"]
    assert invoice["status"] == "paid", invoice
    assert [(i["description"], Decimal(str(i["total"]))) for i in invoice["items"]] == [(line.label, Decimal("20.00"))]
    assert [e.data["amount"] for e in events_of(core, tenant, "payment.succeeded")] == ["20.00", "20.00"]


async def left_pending(client: Any, core: Any, tenant: Tenant, *, asked: bool) -> tuple[int, int]:
    """An invoice with its card charge recorded, asked of Stripe (or not) and never settled: a process that died."""
    await add_card(client, tenant, {"payment_method_id": "pm_card_visa"})
    month = past_month()
    owe(core, tenant, month, "7.77")
    start, _ = billing.month_of(month)
    with core.db.write() as s:
        s.execute(update(Account).where(Account.id == tenant.principal.account_id).values(balance=Decimal(0)))
        gateway, core.stripe = core.stripe, None  # the run records the invoice only
        try:
            invoice_id = billing.invoice_account(core, s, tenant.principal.account_id, start, utcnow())
        finally:
            core.stripe = gateway
        assert invoice_id is not None
        charge_id = billing.charge_by_card(core, s, invoice_id)
        assert charge_id is not None
        charge = s.get(Charge, charge_id)
        assert charge is not None
        key, amount = charge.idempotency_key, charge.amount
    if asked:
        result = await core.stripe.charge_async(tenant.principal.account_id, amount, "USD", "Invoice", key)
        assert result.succeeded
    # Older than a first ask could still be waiting on Stripe.
    with core.db.write() as s:
        s.execute(
            update(Charge)
            .where(Charge.id == charge_id)
            .values(created_at=utcnow() - charges.STUCK_AFTER - timedelta(minutes=1))
        )
    return invoice_id, charge_id


async def test_a_charge_left_pending_is_settled_from_the_payment_intent_stripe_holds(
    client, core, make_tenant, stripe_on, stripe_api
) -> None:
    tenant = make_tenant()
    invoice_id, charge_id = await left_pending(client, core, tenant, asked=True)
    intents = (await stripe_api.get("/v1/payment_intents", params={"limit": 100})).json()["data"]
    [made] = [i for i in intents if i["metadata"].get("cloudplane_charge") == f"cloudplane-invoice-{invoice_id}-1"]

    # The sweep's tick finds it; what it does after the commit asks Stripe and settles it.
    tick = schedules.tick_of(utcnow(), timedelta(seconds=core.settings.charges_sweep_s)) + timedelta(days=365)
    ran = schedules.run_tick(core, next(j for j in schedules.jobs() if j.body is sweep_charges), tick, "test")
    assert ran is not None and ran.then is not None

    async def status() -> str:
        return _status(core, charge_id)

    await eventually(status, lambda settled: settled == "succeeded")
    [charge] = charges_of(core, tenant)
    assert charge.reference == made["id"]  # the PaymentIntent already made: nothing charged again
    intents = (await stripe_api.get("/v1/payment_intents", params={"limit": 100})).json()["data"]
    assert sum(i["metadata"].get("cloudplane_charge") == charge.idempotency_key for i in intents) == 1
    assert invoice_status(core, invoice_id) == "paid"
    assert [e.data["reference"] for e in events_of(core, tenant, "invoice.paid")] == [made["id"]]
    assert await charges.resolve(core, charge_id) == "already settled"


async def test_a_charge_left_before_stripe_was_asked_is_asked_for_by_the_sweep(
    client, core, make_tenant, stripe_on, stripe_api
) -> None:
    tenant = make_tenant()
    invoice_id, charge_id = await left_pending(client, core, tenant, asked=False)
    assert await stripe_on.find_charge(f"cloudplane-invoice-{invoice_id}-1") is None
    outcome = await charges.resolve(core, charge_id)
    assert outcome in ("settled", "already settled")  # the service's own sweep may have been first
    assert _status(core, charge_id) == "succeeded" and invoice_status(core, invoice_id) == "paid"


def _status(core: Any, charge_id: int) -> str:
    with core.db.read() as s:
        return s.execute(select(Charge.status).where(Charge.id == charge_id)).scalar_one()


def smtp_at(core: Any, monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    settings = core.settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False})
    monkeypatch.setattr(core, "settings", settings)


async def test_health_shows_the_smtp_server_online_or_offline(
    client, core, make_tenant, smtp_server: Inbox, monkeypatch
) -> None:
    admin = make_tenant("admin")
    smtp_at(core, monkeypatch, smtp_server.port)
    data = (await client.get(f"{V1}/admin/system/health", headers=admin.headers)).json()["data"]
    assert data["services"]["email"] == "online" and data["checks"]["email"]["latency_ms"] >= 0
    assert data["status"] == "healthy"

    smtp_at(core, monkeypatch, free_port())  # nothing listens there
    data = (await client.get(f"{V1}/admin/system/health", headers=admin.headers)).json()["data"]
    assert data["services"]["email"] == "offline" and data["status"] == "degraded"
    assert "refused" in data["checks"]["email"]["error"].lower()
