"""Billing: servers metered hour by hour from their history (each hour once, whatever ticks it, none lost after a
downtime), a simulated month invoiced with a PDF that reads right, gapless invoice numbers under concurrent runs,
dunning that suspends an overdue account's servers and lifts on payment, admins' payments and credits over the API
and the command line, and the LetsCloud balance agreeing with /billing/usage."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from cloudplane.core import Core
from cloudplane.db.tables import Event, Invoice, Server, ServerSample, UsageRecord, utcnow
from cloudplane.domain import pricing
from cloudplane.services import billing, operations
from cloudplane.services.accounts import Principal
from cloudplane.workflows import billing as billing_jobs
from cloudplane.workflows import schedules
from tests.conftest import PG_URL, ROOT, Tenant, eventually

V1 = "/api/v1"
HOUR = timedelta(hours=1)


def job(name: str) -> schedules.PeriodicJob:
    return next(j for j in schedules.jobs() if j.name == name)


def meter_until(core: Core, now: datetime, executor: str = "test") -> list[datetime]:
    """Run the metering ticks due by `now` (as every process's dispatcher does, a sweep at a time); the ticks run."""
    metering, ran = job(billing_jobs.METERING), []
    if schedules.last_tick(core, metering.name) is None:  # as the service's first sweep: the current hour
        schedules.run_tick(core, metering, schedules.tick_of(datetime.now(UTC), HOUR), executor)
    while ticks := schedules.due_ticks(metering, schedules.last_tick(core, metering.name), now):
        for tick in ticks:
            if schedules.run_tick(core, metering, tick, executor) is not None:
                ran.append(tick)
    return ran


def next_hour(core: Core) -> datetime:
    """The next hour no metering tick ran yet (the service's own sweeps may have run the current one)."""
    last = schedules.last_tick(core, billing_jobs.METERING)
    return (last or schedules.tick_of(datetime.now(UTC), HOUR)) + HOUR


def records_of(core: Core, server_id: int) -> list[Any]:
    with core.db.read() as s:
        return list(
            s.scalars(
                select(UsageRecord)
                .where(UsageRecord.resource_type == "server", UsageRecord.resource_id == str(server_id))
                .order_by(UsageRecord.hour_at)
            )
        )


async def admin_of(make_tenant: Any) -> Tenant:
    return make_tenant("admin")


async def test_a_simulated_month_is_metered_invoiced_and_its_pdf_reads_right(
    client: httpx.AsyncClient, core: Core, make_tenant: Any, create_running_server: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(core.settings, "billing_tax_rate", Decimal("0.2"))
    tenant = make_tenant()
    web = await create_running_server(tenant, label="Web Server 01")
    spare = await create_running_server(tenant, label="Spare box")
    r = await client.post(f"/api/servers/{spare['id']}/stop", headers=tenant.headers)
    assert r.status_code in (200, 202), r.text
    await eventually(
        lambda: client.get(f"/api/servers/{spare['id']}", headers=tenant.headers),
        lambda r: r.json()["status"] == "stopped" and r.json()["task_state"] is None,
    )
    # The month: every hour from now to its end metered, then the run on the 1st.
    _, month_end = billing.month_of(datetime.now(UTC))
    meter_until(core, month_end + timedelta(minutes=30))
    assert records_of(core, web["id"])[-1].hour_at == month_end - HOUR
    ran = schedules.run_tick(core, job("billing-invoices"), month_end, "test")
    assert ran is not None and "invoices" in ran.summary

    r = await client.get(f"{V1}/billing/invoices", headers=tenant.headers)
    assert r.status_code == 200, r.text
    [invoice] = r.json()["data"]
    assert invoice["status"] == "pending" and invoice["invoice_number"].startswith(f"INV-{month_end.year}-")
    # What the month cost, worked out from the servers' own history (their events' times).
    with core.db.read() as s:
        created = {
            int(e.target_id): e.created_at
            for e in s.scalars(
                select(Event).where(
                    Event.type == "vps.created", Event.target_id.in_([str(web["id"]), str(spare["id"])])
                )
            )
        }
        stopped = s.scalars(
            select(Event.created_at).where(Event.type == "vps.stopped", Event.target_id == str(spare["id"]))
        ).one()
    plan = core.catalog.view().by_slug("plan", "basic-1gb")
    assert plan is not None
    hourly = pricing.hourly_from_monthly(plan.price_monthly)
    web_cost = hourly * Decimal((month_end - created[web["id"]]).total_seconds()) / 3600
    disk_hourly = pricing.hourly_from_monthly(pricing.STORAGE_GB_MONTH * plan.disk_gb)
    spare_cost = (
        hourly * Decimal((stopped - created[spare["id"]]).total_seconds()) / 3600
        + disk_hourly * Decimal((month_end - stopped).total_seconds()) / 3600
    )
    month = f"{(month_end - HOUR):%B %Y}"
    lines = {i["description"]: Decimal(str(i["total"])) for i in invoice["items"]}
    assert set(lines) == {f"Web Server 01 ({plan.name}) - {month}", f"Spare box ({plan.name}) - {month}"}
    assert abs(lines[f"Web Server 01 ({plan.name}) - {month}"] - web_cost) <= Decimal("0.01")
    assert abs(lines[f"Spare box ({plan.name}) - {month}"] - spare_cost) <= Decimal("0.01")
    subtotal = sum(lines.values(), Decimal(0))
    assert Decimal(str(invoice["tax"])) == pricing.tax_of(subtotal, Decimal("0.2"))
    assert Decimal(str(invoice["amount"])) == subtotal + pricing.tax_of(subtotal, Decimal("0.2"))

    r = await client.get(f"{V1}/billing/invoices/{invoice['id']}/pdf", headers=tenant.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(r.content)).pages)
    assert f"Invoice {invoice['invoice_number']}" in text
    assert "Seller" in text and "Cloudplane" in text  # the seller
    assert tenant.email in text and "Bill to" in text  # the buyer
    for description, total in lines.items():
        assert description in text and f"{total:,.2f} USD" in text
    assert "Tax (20%)" in text and f"{Decimal(str(invoice['tax'])):,.2f} USD" in text
    assert f"Total {Decimal(str(invoice['amount'])):,.2f} USD" in text.replace("\n", " ")

    # Another tenant can neither read it nor its PDF.
    other = make_tenant()
    for path in (f"{V1}/billing/invoices/{invoice['id']}", f"{V1}/billing/invoices/{invoice['id']}/pdf"):
        r = await client.get(path, headers=other.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    # The run on the 1st invoices nobody twice.
    assert billing.run_invoices(core, Principal(0, 0, "admin"), f"{month_end - HOUR:%Y-%m}", now=month_end) == []


async def test_two_processes_ticking_the_same_hour_meter_it_once(
    core: Core, make_tenant: Any, create_running_server: Any
) -> None:
    server = await create_running_server(make_tenant())
    hour = next_hour(core)
    other = Core.build(core.settings)  # a second process's collaborators, over the same database
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def tick(c: Core, name: str) -> None:
        barrier.wait()
        results.append(schedules.run_tick(c, job(billing_jobs.METERING), hour, name))

    threads = [threading.Thread(target=tick, args=(c, n)) for c, n in ((core, "process-a"), (other, "process-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.db.dispose()
    assert sum(r is not None for r in results) == 1
    [record] = [r for r in records_of(core, server["id"]) if r.hour_at == hour - HOUR]
    assert record.running_s == 3600 and record.stopped_s == 0


async def test_a_downtime_of_five_hours_is_caught_up_hour_by_hour_none_doubled(
    client: httpx.AsyncClient, core: Core, make_tenant: Any, create_running_server: Any
) -> None:
    tenant = make_tenant()
    server = await create_running_server(tenant)
    r = await client.post(f"{V1}/apps", json={"name": "metered", "storage_limit": 1024}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    app_id = r.json()["id"]
    meter_until(core, next_hour(core))  # metered up to now
    before = len(records_of(core, server["id"]))
    last = schedules.last_tick(core, billing_jobs.METERING)
    assert last is not None
    restart = last + timedelta(hours=5, minutes=10)
    # What the metrics job sampled meanwhile: bytes in and out in the second missed hour (two samples), and the
    # fourth hour's, rolled up (its samples pruned).
    sample = {"server_id": server["id"], "cpu_percent": 1.0, "memory_used_mb": 1, "disk_used_mb": 1}
    totals = {"net_rx_total": 0, "net_tx_total": 0, "uptime_s": 1}
    with core.db.write() as s:
        s.execute(
            ServerSample.__table__.insert(),
            [
                {
                    **sample,
                    **totals,
                    "resolution_s": 0,
                    "at": last + HOUR + timedelta(minutes=m),
                    "net_in_bytes": 10**9,
                    "net_out_bytes": 5 * 10**8,
                }
                for m in (1, 31)
            ]
            + [
                {**sample, **totals, "resolution_s": 3600, "at": last + 3 * HOUR, "net_in_bytes": 7, "net_out_bytes": 3}
            ],
        )
    assert len(meter_until(core, restart, "process-a")) == 5
    assert meter_until(core, restart, "process-b") == []  # another process after it: nothing left
    records = records_of(core, server["id"])
    assert len(records) == before + 5
    hours = [r.hour_at for r in records[-5:]]
    assert hours == [hours[0] + HOUR * n for n in range(5)] and all(r.running_s == 3600 for r in records[-5:])
    assert [r.transfer_bytes for r in records[-5:]] == [0, 3 * 10**9, 0, 10, 0]
    # The app (stopped: nothing runs apps yet) is billed its storage, an hour at a time.
    with core.db.read() as s:
        app_hours = list(
            s.scalars(select(UsageRecord).where(UsageRecord.resource_type == "app", UsageRecord.resource_id == app_id))
        )
    storage_hour = pricing.cost_of_seconds(3600, pricing.hourly_from_monthly(pricing.STORAGE_GB_MONTH))
    assert [(r.stopped_s, r.cost_micros) for r in app_hours[-5:]] == [(3600, int(storage_hour * 1_000_000))] * 5
    with core.db.read() as s:
        doubled = s.execute(
            select(UsageRecord.resource_id, UsageRecord.hour_at, func.count())
            .group_by(UsageRecord.resource_type, UsageRecord.resource_id, UsageRecord.hour_at)
            .having(func.count() > 1)
        ).all()
    assert doubled == []


async def test_a_month_of_hours_costs_the_plan_price_at_most(
    core: Core, make_tenant: Any, create_running_server: Any
) -> None:
    server = await create_running_server(make_tenant())
    # 744 hours (a 31-day month) at monthly / 730 would be more than the monthly price: the month is capped.
    plan = core.catalog.view().by_slug("plan", "basic-1gb")
    assert plan is not None
    with core.db.read() as s:
        row = s.execute(select(Server).where(Server.id == server["id"])).scalar_one()
        plans = {plan.id: plan}
        priced = billing._price_server(row, plans)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [billing._record(row.account_id, "server", row.id, start + HOUR * n, priced, 3600, 0) for n in range(744)]
    with core.db.write() as s:
        s.execute(UsageRecord.__table__.insert(), rows)
        [used] = billing.services_used(s, row.account_id, start, start + timedelta(days=31))
    assert Decimal(sum(r["cost_micros"] for r in rows)) / 1_000_000 > plan.price_monthly
    assert used.cost == plan.price_monthly and used.running_hours == 744


def _seed_month(core: Core, account_id: int, server_id: int, start: datetime, hours: int = 10) -> None:
    """Usage records of a past month, as the metering job writes them."""
    priced = billing._Priced("server", f"srv-{server_id}", "Basic", Decimal("1.000000"), Decimal(25), 0, None, None)
    rows = [billing._record(account_id, "server", server_id, start + HOUR * n, priced, 3600, 0) for n in range(hours)]
    with core.db.write() as s:
        s.execute(UsageRecord.__table__.insert(), rows)


def seed_invoice(core: Core, account_id: int, server_id: int) -> int:
    """An invoice of the account's (for a month long past), made by the run from seeded usage records. Issued now,
    so it is pending for days: the service's own overdue check, which may tick while a test runs, leaves it be."""
    _seed_month(core, account_id, server_id, datetime(2020, 1, 1, tzinfo=UTC))
    with core.db.write() as s:
        invoice_id = billing.invoice_account(core, s, account_id, datetime(2020, 1, 1, tzinfo=UTC), utcnow())
    assert invoice_id is not None
    return invoice_id


@pytest.mark.skipif(not PG_URL.startswith("postgresql"), reason="two writers at once need PostgreSQL")
async def test_two_invoice_runs_at_once_give_gapless_numbers_and_no_invoice_twice(core: Core, make_tenant: Any) -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    tenants = [make_tenant() for _ in range(8)]
    for n, t in enumerate(tenants):
        _seed_month(core, t.principal.account_id, 10_000_000 + n, start)
    admin = Principal(0, 0, "admin")
    now = datetime(2024, 4, 2, tzinfo=UTC)
    made: list[list[Any]] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        made.append(billing.run_invoices(core, admin, "2024-03", now=now))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(m) for m in made) == 8  # each account once, whichever run invoiced it
    with core.db.read() as s:
        numbers = sorted(
            int(n.rsplit("-", 1)[1]) for n in s.scalars(select(Invoice.number).where(Invoice.number.like("INV-2024-%")))
        )
    assert numbers == list(range(1, len(numbers) + 1))


async def test_invoice_numbers_are_gapless_and_per_year(core: Core, make_tenant: Any) -> None:
    start = datetime(2023, 5, 1, tzinfo=UTC)
    tenants = [make_tenant() for _ in range(3)]
    for n, t in enumerate(tenants):
        _seed_month(core, t.principal.account_id, 20_000_000 + n, start)
    made = billing.run_invoices(core, Principal(0, 0, "admin"), "2023-05", now=datetime(2023, 6, 1, 1, tzinfo=UTC))
    assert [i.number for i in made] == ["INV-2023-001", "INV-2023-002", "INV-2023-003"]
    assert all(i.total == Decimal("10.00") and len(i.items) == 1 for i in made)


async def test_dunning_suspends_an_overdue_account_and_paying_lifts_it(
    client: httpx.AsyncClient, core: Core, make_tenant: Any, create_running_server: Any
) -> None:
    owner, admin = make_tenant(), make_tenant("admin")
    server = await create_running_server(owner)
    issued = datetime(2022, 2, 1, tzinfo=UTC)
    _seed_month(core, owner.principal.account_id, server["id"], datetime(2022, 1, 1, tzinfo=UTC))
    [invoice] = billing.run_invoices(core, Principal(0, 0, "admin"), "2022-01", now=issued)
    settings = core.settings
    due_plus_grace = invoice.due_at + timedelta(days=settings.billing_grace_days)

    def check(at: datetime) -> None:
        with core.db.write() as s:
            _, ops = billing.check_overdue(core, s, at)
        for op in ops:
            operations.launch(op)

    async def invoice_status() -> str:
        return (await client.get(f"{V1}/billing/invoices/inv-{invoice.id}", headers=owner.headers)).json()["data"][
            "status"
        ]

    check(due_plus_grace - timedelta(minutes=1))
    assert await invoice_status() == "pending"
    check(due_plus_grace + timedelta(minutes=1))
    assert await invoice_status() == "overdue"
    r = await client.get(f"{V1}/billing/invoices", params={"status": "overdue"}, headers=owner.headers)
    assert [i["id"] for i in r.json()["data"]] == [f"inv-{invoice.id}"]
    window = {"start_date": "2022-02-01T00:00:00Z", "end_date": "2022-02-01T00:00:00"}
    r = await client.get(f"{V1}/billing/invoices", params=window, headers=owner.headers)
    assert [i["id"] for i in r.json()["data"]] == [f"inv-{invoice.id}"]
    r = await client.get(f"{V1}/billing/invoices", params={"start_date": "2022-02-01T00:00:01Z"}, headers=owner.headers)
    assert r.json()["data"] == []
    reversed_window = {"start_date": "2022-03-01T00:00:00Z", "end_date": "2022-01-01T00:00:00Z"}
    assert (await client.get(f"{V1}/billing/invoices", params=reversed_window, headers=owner.headers)).json()[
        "data"
    ] == []
    r = await client.get(f"{V1}/billing/invoices", params={"start_date": "0.5"}, headers=owner.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "start_date"
    assert (await client.get(f"/api/servers/{server['id']}", headers=owner.headers)).json()["status"] == "running"
    # Overdue longer than the dunning period: the servers are suspended.
    check(due_plus_grace + timedelta(days=settings.billing_dunning_days, minutes=1))
    await eventually(
        lambda: client.get(f"{V1}/vps/vps-{server['id']}", headers=owner.headers),
        lambda r: r.json()["data"]["status"] == "suspended" and r.json()["data"].get("operation_id") is None,
    )
    await _settled(core, server["id"])
    # A user cannot record a payment; the admin does, over the API, and the suspension is lifted.
    body = {"user_id": f"user-{owner.principal.user_id}", "amount": str(invoice.total), "reference": "TR-1"}
    r = await client.post(f"{V1}/admin/billing/payments", json=body, headers=owner.headers)
    assert r.status_code == 403
    r = await client.post(f"{V1}/admin/billing/payments", json=body, headers=admin.headers)
    assert r.status_code == 201, r.text
    assert await invoice_status() == "paid"
    await eventually(
        lambda: client.get(f"/api/servers/{server['id']}", headers=owner.headers),
        lambda r: r.json()["status"] == "running",
    )
    with core.db.read() as s:
        types = list(
            s.scalars(
                select(Event.type)
                .where(Event.account_id == owner.principal.account_id, Event.type.like("%dunning%"))
                .order_by(Event.seq)
            )
        )
        invoice_events = list(
            s.scalars(
                select(Event.type)
                .where(Event.target_type == "invoice", Event.target_id == str(invoice.id))
                .order_by(Event.seq)
            )
        )
    assert types == ["account.dunning_suspended", "account.dunning_lifted"]
    assert invoice_events == ["invoice.created", "invoice.overdue", "invoice.paid"]


async def _settled(core: Core, server_id: int) -> None:
    from tests.integration.test_suspension import settled

    await settled(core, server_id)


async def test_balance_on_get_account_info_agrees_with_billing_usage_and_credits_pay_invoices(
    client: httpx.AsyncClient, core: Core, make_tenant: Any, create_running_server: Any
) -> None:
    tenant, admin = make_tenant(), make_tenant("admin")
    server = await create_running_server(tenant)
    # This month's first hours (other tests may have moved metering past this month) and a past month's.
    _seed_month(core, tenant.principal.account_id, server["id"], billing.month_of(datetime.now(UTC))[0], hours=3)
    _seed_month(core, tenant.principal.account_id, server["id"], datetime(2021, 6, 1, tzinfo=UTC), hours=5)
    [invoice] = billing.run_invoices(core, Principal(0, 0, "admin"), "2021-06", now=datetime(2021, 7, 1, tzinfo=UTC))
    assert invoice.total == Decimal("5.00")

    async def figures() -> tuple[dict[str, Any], dict[str, Any]]:
        usage = (await client.get(f"{V1}/billing/usage", headers=tenant.headers)).json()
        account = (await client.get("/api/account", headers=tenant.headers)).json()
        return usage, account

    usage, account = await figures()
    assert usage["success"] is True and usage["period"] == f"{datetime.now(UTC):%Y-%m}"
    [service] = usage["data"]["services"]
    assert service["vps_id"] == f"vps-{server['id']}" and service["usage"]["cpu_hours"] > 0
    month = Decimal(str(usage["estimated_cost"]))
    assert month == Decimal("3.00") and Decimal(str(usage["data"]["current_period"]["total_cost"])) == month
    assert usage["usage"]["compute_hours"] == service["usage"]["cpu_hours"]
    assert Decimal(str(account["month_costs"])) == month
    assert Decimal(str(account["balance"])) == -month - Decimal("5.00")

    # A credit over the command line pays the invoice and leaves the rest as credit.
    env = {**os.environ, "CLOUDPLANE_DATABASE_URL": str(core.settings.database_url)}
    done = subprocess.run(
        [sys.executable, "-m", "cloudplane", "admin", "credit", "--email", tenant.email, "--amount", "7.50", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["credit"] == "2.50" and printed["unpaid_invoices"] == "0.00"
    usage, account = await figures()
    assert Decimal(str(account["balance"])) == Decimal("2.50") - Decimal(str(usage["estimated_cost"]))
    r = await client.get(f"{V1}/billing/invoices", params={"status": "paid"}, headers=tenant.headers)
    assert [i["invoice_number"] for i in r.json()["data"]] == [invoice.number]
    # An amount that is no money is refused in the envelope, naming the field.
    r = await client.post(
        f"{V1}/admin/billing/credits",
        json={"user_id": f"user-{tenant.principal.user_id}", "amount": "-3"},
        headers=admin.headers,
    )
    assert r.status_code == 422 and r.json()["success"] is False
    # Admin stats count the revenue and the overdue accounts.
    stats = (await client.get(f"{V1}/admin/stats", headers=admin.headers)).json()["data"]
    assert Decimal(stats["revenue"]["paid_total"]) >= Decimal("5.00") and "overdue_accounts" in stats
