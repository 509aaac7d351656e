"""Billing: hourly metering from each resource's history, the month's usage and cost, invoices (gapless numbers,
PDF), settling them from the account's credit, and dunning.

**Where a server's hours come from.** A server's power state over time is read from the events outbox, which
every state change writes in its own transaction (`vps.created`, `vps.started`, `vps.stopped`, `vps.rebooted`,
`vps.deleted`, `vps.suspended`, `vps.unsuspended`, and the reconciler's `vps.drifted` with its `to`): the events
are the state-change log, with the times the changes committed. Metering an hour replays a server's events up to
the hour's end and counts the seconds it spent running and held but not running (stopped, suspended, in error);
a server whose create never succeeded has no `vps.created` and is never billed. Apps have no run history yet:
an app is metered from its row (its storage while it exists, its compute while its status is `running`).

**Prices** (domain/pricing.py): a running catalog server costs its plan's monthly price / 730 an hour; a held
one its disk at the storage price; a month of a server never costs more than its plan's monthly price. A GPU
instance costs its offer's hourly price while running, uncapped. Transfer beyond a plan's monthly allowance is
billed per GB.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import (
    Account,
    App,
    Charge,
    Event,
    Invoice,
    InvoiceCounter,
    InvoiceItem,
    Plan,
    Server,
    ServerSample,
    UsageRecord,
    User,
    table_of,
    utcnow,
)
from cloudplane.domain import pricing
from cloudplane.domain.errors import InvalidState, NotFound, ProviderError, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.services import charges, events, operations, suspension, users
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import Page, counted, paged_window, window
from cloudplane.services.payments import ChargeResult, OfflineGateway, PaymentGateway, add_credit
from cloudplane.services.tenancy import mine

HOUR = timedelta(hours=1)
# The usage records of a subscription's renewals (services/subscriptions.py): one per period, at its start.
RENEWAL = "subscription"
STATUSES = ("pending", "paid", "overdue")
OPEN = ("pending", "overdue")
_MICROS = Decimal(1_000_000)

# The events that change a server's billable state, and how.
_POWER_ON = {EventType.VPS_CREATED, EventType.VPS_STARTED, EventType.VPS_REBOOTED}
STATE_EVENTS = [
    str(t)
    for t in (
        *_POWER_ON,
        EventType.VPS_STOPPED,
        EventType.VPS_DELETED,
        EventType.VPS_SUSPENDED,
        EventType.VPS_UNSUSPENDED,
        EventType.VPS_DRIFTED,
    )
]
# Servers whose history one query reads.
_CHUNK = 500


@dataclass
class _State:
    """A server's billable state while its history is replayed: powered (None: not there), and suspended."""

    power: str | None = None
    suspended: bool = False

    def apply(self, type_: str, data: dict[str, Any]) -> None:
        if type_ in _POWER_ON:
            self.power = "running"
        elif type_ == EventType.VPS_STOPPED:
            self.power = "stopped"
        elif type_ == EventType.VPS_DELETED:
            self.power = None
        elif type_ == EventType.VPS_SUSPENDED:
            self.suspended = True
        elif type_ == EventType.VPS_UNSUSPENDED:
            self.suspended = False
        elif type_ == EventType.VPS_DRIFTED and self.power is not None:
            to = data.get("to")
            self.power = None if to == "deleted" else str(to)

    @property
    def running(self) -> bool:
        return self.power == "running" and not self.suspended


def server_seconds(history: Iterable[tuple[datetime, str, dict[str, Any]]], start: datetime) -> tuple[int, int]:
    """Seconds running and seconds held but not running in the hour from `start`, from a server's state events
    (time, type, data) up to the hour's end, oldest first."""
    end = start + HOUR
    state, at = _State(), start
    running = held = 0.0

    def count(until: datetime) -> None:
        nonlocal running, held
        seconds = (min(until, end) - at).total_seconds()
        if seconds > 0 and state.power is not None:
            if state.running:
                running += seconds
            else:
                held += seconds

    for when, type_, data in history:
        if when > at:
            count(when)
            at = min(when, end)
        state.apply(type_, data)
    count(end)
    return round(running), round(held)


@dataclass(frozen=True)
class _Priced:
    resource_type: str
    label: str
    plan: str | None
    running_hourly: Decimal
    storage_gb: Decimal
    gpu_count: int
    monthly_cap: Decimal | None
    allowance_gb: int | None


def _price_server(server: Any, plans: dict[int, Any]) -> _Priced:
    plan = plans.get(server.plan_id) if server.plan_id is not None else None
    if plan is not None:
        return _Priced(
            "server",
            server.label,
            plan.name,
            pricing.hourly_from_monthly(plan.price_monthly),
            Decimal(plan.disk_gb),
            0,
            plan.price_monthly,
            pricing.transfer_allowance_gb(plan.ram_mb),
        )
    # A rented GPU instance: the offer's hourly price, no cap, no transfer included.
    gpu_model = f"{server.gpu_count or 1}x {server.gpu_model}" if server.gpu_model else None
    return _Priced(
        "gpu",
        server.label,
        gpu_model,
        server.price_per_hour or Decimal(0),
        server.storage_gb or Decimal(0),
        server.gpu_count or 0,
        None,
        None,
    )


def _record(
    account_id: int, resource_type: str, resource_id: Any, hour: datetime, priced: _Priced, running: int, held: int
) -> dict[str, Any]:
    storage_hourly = pricing.hourly_from_monthly(pricing.STORAGE_GB_MONTH * priced.storage_gb)
    cost = pricing.cost_of_seconds(running, priced.running_hourly) + pricing.cost_of_seconds(held, storage_hourly)
    return {
        "account_id": account_id,
        "resource_type": resource_type,
        "resource_id": str(resource_id),
        "hour_at": hour,
        "label": priced.label[:255],
        "plan": priced.plan,
        "running_s": running,
        "stopped_s": held,
        "storage_gb_s": round(priced.storage_gb * (running + held)),
        "gpu_s": priced.gpu_count * running,
        "transfer_bytes": 0,
        "cost_micros": int(cost * _MICROS),
        "monthly_cap": priced.monthly_cap,
        "transfer_allowance_gb": priced.allowance_gb,
    }


_servers, _events, _samples = table_of(Server), table_of(Event), table_of(ServerSample)


def _transfer(session: Session, ids: Sequence[int], start: datetime) -> dict[int, int]:
    """Bytes in and out of each server over the hour, from the metrics samples (the hour's roll-up once the
    samples are pruned)."""
    end = start + HOUR
    moved = _samples.c.net_in_bytes + _samples.c.net_out_bytes
    raw = session.execute(
        select(_samples.c.server_id, func.sum(moved))
        .where(_samples.c.server_id.in_(ids), _samples.c.resolution_s == 0)
        .where(_samples.c.at >= start, _samples.c.at < end)
        .group_by(_samples.c.server_id)
    ).all()
    found = {int(sid): int(total or 0) for sid, total in raw}
    missing = [sid for sid in ids if sid not in found]
    if missing:
        rolled = session.execute(
            select(_samples.c.server_id, moved).where(
                _samples.c.server_id.in_(missing), _samples.c.resolution_s == 3600, _samples.c.at == start
            )
        ).all()
        found.update({int(sid): int(total or 0) for sid, total in rolled})
    return found


def meter_hour(session: Session, start: datetime) -> int:
    """Write the usage records of the hour from `start` (every server, GPU instance and app that existed in it),
    in the caller's transaction; how many. An hour is metered once: the records' unique key refuses a second."""
    end = start + HOUR
    plans = {p.id: p for p in session.execute(select(table_of(Plan))).all()}
    alive = session.execute(
        select(_servers).where(
            _servers.c.created_at < end, or_(_servers.c.deleted_at.is_(None), _servers.c.deleted_at >= start)
        )
    ).all()
    rows: list[dict[str, Any]] = []
    for offset in range(0, len(alive), _CHUNK):
        chunk = alive[offset : offset + _CHUNK]
        history: dict[str, list[tuple[datetime, str, dict[str, Any]]]] = defaultdict(list)
        for e in session.execute(
            select(_events.c.target_id, _events.c.created_at, _events.c.type, _events.c.data)
            .where(_events.c.target_type == "server", _events.c.target_id.in_([str(s.id) for s in chunk]))
            .where(_events.c.type.in_(STATE_EVENTS), _events.c.created_at < end)
            .order_by(_events.c.seq)
        ):
            history[e.target_id].append((e.created_at, e.type, dict(e.data or {})))
        metered = []
        for server in chunk:
            running, held = server_seconds(history.get(str(server.id), ()), start)
            if running + held:
                priced = _price_server(server, plans)
                metered.append(
                    _record(server.account_id, priced.resource_type, server.id, start, priced, running, held)
                )
        moved = _transfer(session, [int(r["resource_id"]) for r in metered], start) if metered else {}
        for r in metered:
            r["transfer_bytes"] = moved.get(int(r["resource_id"]), 0)
        rows.extend(metered)
    rows.extend(_meter_apps(session, start))
    if rows:
        session.execute(insert(table_of(UsageRecord)), rows)
    return len(rows)


def _meter_apps(session: Session, start: datetime) -> list[dict[str, Any]]:
    end = start + HOUR
    rows = []
    for app in session.execute(select(table_of(App)).where(table_of(App).c.created_at < end)).all():
        seconds = round((end - max(app.created_at, start)).total_seconds())
        running = seconds if app.status == "running" else 0
        storage_gb = Decimal(app.storage_limit) / 1024
        # Running: its replicas' compute and its storage; stopped: its storage (`_record`'s held price).
        running_monthly = (
            pricing.APP_VCPU_MONTH * app.cpu_limit / 1000 + pricing.APP_MEMORY_GB_MONTH * app.memory_limit / 1024
        ) * app.replicas + pricing.STORAGE_GB_MONTH * storage_gb
        priced = _Priced(
            "app",
            app.name,
            None,
            pricing.hourly_from_monthly(running_monthly),
            storage_gb,
            0,
            None,
            None,
        )
        rows.append(_record(app.account_id, "app", app.id, start, priced, running, seconds - running))
    return rows


def month_of(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding `moment`: its first instant and the next month's."""
    start = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


@dataclass(frozen=True)
class ServiceUsage:
    """One resource's use over a period and what it costs (capped, transfer beyond the allowance added)."""

    resource_type: str
    resource_id: str
    label: str
    plan: str | None
    running_hours: Decimal
    held_hours: Decimal
    storage_gb_hours: Decimal
    gpu_hours: Decimal
    bandwidth_gb: Decimal
    cost: Decimal


@dataclass(frozen=True)
class Usage:
    period_start: datetime
    period_end: datetime
    currency: str
    services: list[ServiceUsage] = field(default_factory=list)

    @property
    def total_cost(self) -> Decimal:
        return sum((s.cost for s in self.services), Decimal("0.00"))

    def total(self, name: str) -> Decimal:
        return sum((getattr(s, name) for s in self.services), Decimal(0))


_usage = table_of(UsageRecord)


def _hours(seconds: int) -> Decimal:
    return (Decimal(seconds) / 3600).quantize(pricing.CENT)


def services_used(session: Session, account_id: int, start: datetime, end: datetime) -> list[ServiceUsage]:
    """Each resource's use in [start, end), a part of one calendar month, with its cost: the one place a cost is
    worked out from usage records (usage, invoices and the balance all read it)."""
    u = _usage.c
    rows = session.execute(
        select(
            u.resource_type,
            u.resource_id,
            func.max(u.label),
            func.max(u.plan),
            func.sum(u.running_s),
            func.sum(u.stopped_s),
            func.sum(u.storage_gb_s),
            func.sum(u.gpu_s),
            func.sum(u.transfer_bytes),
            func.sum(u.cost_micros),
            func.max(u.monthly_cap),
            func.max(u.transfer_allowance_gb),
        )
        .where(u.account_id == account_id, u.hour_at >= start, u.hour_at < end)
        .group_by(u.resource_type, u.resource_id)
        .order_by(u.resource_type, u.resource_id)
    ).all()
    out = []
    for rtype, rid, label, plan, running, held, storage, gpu, moved, micros, cap, allowance in rows:
        cost = pricing.month_cost(Decimal(int(micros)) / _MICROS, cap) + pricing.bandwidth_overage_cost(
            int(moved), allowance
        )
        out.append(
            ServiceUsage(
                resource_type=rtype,
                resource_id=rid,
                label=label,
                plan=plan,
                running_hours=_hours(int(running)),
                held_hours=_hours(int(held)),
                storage_gb_hours=_hours(int(storage)),
                gpu_hours=_hours(int(gpu)),
                bandwidth_gb=(Decimal(int(moved)) / pricing.BYTES_PER_GB).quantize(pricing.CENT),
                cost=cost,
            )
        )
    return out


def current_usage(core: Core, principal: Principal, now: datetime | None = None) -> Usage:
    """The caller's usage and cost so far in the current calendar month."""
    start, end = month_of(now or utcnow())
    with core.db.read() as s:
        return Usage(start, end, pricing.CURRENCY, services_used(s, principal.account_id, start, end))


@dataclass(frozen=True)
class Balance:
    """An account's money: its credit, what it owes (open invoices and the month so far), and the difference."""

    credit: Decimal
    unpaid_invoices: Decimal
    month_cost: Decimal
    currency: str

    @property
    def balance(self) -> Decimal:
        return self.credit - self.unpaid_invoices - self.month_cost


def balance_of(core: Core, principal: Principal, now: datetime | None = None) -> Balance:
    start, end = month_of(now or utcnow())
    with core.db.read() as s:
        account = s.get(Account, principal.account_id)
        if account is None:
            raise NotFound("Account not found")
        unpaid = s.scalar(
            select(func.coalesce(func.sum(Invoice.total), 0)).where(mine(Invoice, principal), Invoice.status.in_(OPEN))
        )
        month = sum((x.cost for x in services_used(s, principal.account_id, start, end)), Decimal("0.00"))
    return Balance(Decimal(account.balance), Decimal(str(unpaid)).quantize(pricing.CENT), month, account.currency)


# Invoices.


@dataclass(frozen=True)
class InvoiceLine:
    description: str
    quantity: Decimal
    unit_price: Decimal
    total: Decimal


@dataclass(frozen=True)
class InvoiceView:
    id: int
    account_id: int
    number: str
    period_start: datetime
    period_end: datetime
    status: str
    currency: str
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal
    issued_at: datetime
    due_at: datetime
    paid_at: datetime | None
    items: list[InvoiceLine]


_invoices, _items, _counters = table_of(Invoice), table_of(InvoiceItem), table_of(InvoiceCounter)


def _next_number(session: Session, year: int) -> str:
    """The year's next invoice number. The counter's row stays locked until the invoice commits (PostgreSQL; SQLite
    has one writer), so two runs at once take consecutive numbers, and a rolled-back invoice gives its back."""
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(make(_counters).values(year=year, last=0).on_conflict_do_nothing(index_elements=["year"]))
    n = session.execute(
        update(_counters).where(_counters.c.year == year).values(last=_counters.c.last + 1).returning(_counters.c.last)
    ).scalar_one()
    return f"INV-{year}-{n:03d}"


def _month_name(start: datetime) -> str:
    return f"{calendar.month_name[start.month]} {start.year}"


def _line_description(service: ServiceUsage, start: datetime) -> str:
    if service.resource_type == RENEWAL:
        return service.label  # it names its own period
    what = f"{service.label} ({service.plan})" if service.plan else service.label
    return f"{what} - {_month_name(start)}"


def invoice_account(core: Core, session: Session, account_id: int, period_start: datetime, now: datetime) -> int | None:
    """Write the invoice of the account's month from `period_start`, one line per service that cost something, in
    the caller's transaction, and settle it from the account's credit; its id (None: nothing to invoice, or
    invoiced already)."""
    start, end = month_of(period_start)
    if session.scalar(
        select(_invoices.c.id).where(_invoices.c.account_id == account_id, _invoices.c.period_start == start)
    ):
        return None
    services = [s for s in services_used(session, account_id, start, end) if s.cost > 0]
    if not services:
        return None
    settings = core.settings
    subtotal = sum((s.cost for s in services), Decimal("0.00"))
    rate = Decimal(settings.billing_tax_rate)
    tax = pricing.tax_of(subtotal, rate)
    number = _next_number(session, now.year)
    invoice_id = session.execute(
        insert(_invoices).returning(_invoices.c.id),
        {
            "account_id": account_id,
            "number": number,
            "period_start": start,
            "period_end": end,
            "status": "pending",
            "currency": pricing.CURRENCY,
            "subtotal": subtotal,
            "tax_rate": rate,
            "tax": tax,
            "total": subtotal + tax,
            "issued_at": now,
            "due_at": now + timedelta(days=settings.billing_due_days),
        },
    ).scalar_one()
    session.execute(
        insert(_items),
        [
            {
                "invoice_id": invoice_id,
                "position": n,
                "description": _line_description(s, start)[:400],
                "resource_type": s.resource_type,
                "resource_id": s.resource_id,
                "quantity": Decimal(1),
                "unit_price": s.cost,
                "total": s.cost,
            }
            for n, s in enumerate(services, 1)
        ],
    )
    events.record(
        session,
        EventType.INVOICE_CREATED,
        account_id=account_id,
        target_type="invoice",
        target_id=invoice_id,
        data={"invoice_id": invoice_id, "invoice_number": number, "amount": str(subtotal + tax)},
    )
    settle(session, account_id, OfflineGateway(session), now)
    charge_by_card(core, session, invoice_id)
    return int(invoice_id)


# Card charges of an invoice: `cloudplane-invoice-<id>-<attempt>`, so a retried ask of one attempt is the same charge
# at Stripe (never taken twice) and a new attempt after a refusal is a new one (Stripe would answer the old key with
# the old refusal).
INVOICE_PURPOSE = "invoice"


def invoice_charge_key(invoice_id: int, attempt: int) -> str:
    return f"cloudplane-invoice-{invoice_id}-{attempt}"


def _charges_of(invoice_id: int) -> ColumnElement[bool]:
    return Charge.idempotency_key.like(f"cloudplane-invoice-{invoice_id}-%")


def charge_by_card(core: Core, session: Session, invoice_id: int) -> int | None:
    """Record the card charge of an open invoice, in the caller's transaction, when the account can be charged
    off-session (Stripe configured, a default card) and no charge of it is pending; the charge's id, to be asked for
    after the commit (`pay_by_card`). None: nothing to charge."""
    gateway = core.stripe
    inv = session.execute(select(_invoices).where(_invoices.c.id == invoice_id)).one()
    if gateway is None or inv.status not in OPEN or not gateway.can_charge(inv.account_id):
        return None
    tries = session.execute(select(Charge.status).where(_charges_of(invoice_id))).scalars().all()
    if "pending" in tries or "succeeded" in tries:
        return None
    charge = charges.begin(
        session,
        account_id=inv.account_id,
        gateway=gateway.name,
        amount=inv.total,
        currency=inv.currency,
        description=f"Invoice {inv.number}",
        purpose=INVOICE_PURPOSE,
        data={"invoice_id": inv.id, "invoice_number": inv.number},
        idempotency_key=invoice_charge_key(inv.id, len(tries) + 1),
    )
    return charge.id


def pay_by_card(core: Core, charge_ids: Sequence[int]) -> None:
    """Ask the gateway for recorded invoice charges, each outside any transaction, and settle each. Blocks its
    thread on the gateway: for worker threads (the admin's and the command line's invoice runs, the monthly run's
    follow-up). A charge whose outcome is unknown stays pending for the sweep (`charges.resolve`)."""
    gateway = core.stripe
    if gateway is None:
        return
    for charge_id in charge_ids:
        with core.db.read() as s:
            charge = s.get(Charge, charge_id)
        if charge is None or charge.status != "pending":
            continue
        try:
            result = gateway.charge(
                charge.account_id, charge.amount, charge.currency, charge.description, charge.idempotency_key
            )
        except ProviderError:
            continue
        with core.db.write() as s:
            charges.settle(s, charge_id, result)


def _charge_open(core: Core, account_id: int) -> list[int]:
    with core.db.write() as s:
        open_invoices = s.scalars(
            select(_invoices.c.id)
            .where(_invoices.c.account_id == account_id, _invoices.c.status.in_(OPEN))
            .order_by(_invoices.c.issued_at, _invoices.c.id)
        ).all()
        recorded = [charge_by_card(core, s, invoice_id) for invoice_id in open_invoices]
    return [c for c in recorded if c is not None]


async def charge_open_invoices(core: Core, account_id: int) -> None:
    """Charge the account's open invoices to its default card, oldest first, each as a new attempt (as Stripe
    Billing retries an invoice when the customer changes the card): what a new default card does. Each is recorded,
    committed, asked for and settled; one whose outcome is unknown is left to the sweep."""
    for charge_id in await core.db.run(_charge_open, core, account_id):
        await charges.ask(core, charge_id)


def fresh_charges(session: Session, invoice_ids: Sequence[int]) -> list[int]:
    """The pending first charges of these new invoices."""
    if not invoice_ids:
        return []
    keys = [invoice_charge_key(i, 1) for i in invoice_ids]
    return list(session.scalars(select(Charge.id).where(Charge.idempotency_key.in_(keys), Charge.status == "pending")))


@charges.on_settled(INVOICE_PURPOSE)
def _card_charge_settled(session: Session, charge: Charge, result: ChargeResult) -> None:
    """A card charge that went through pays its invoice (and lifts dunning: the operations it records are started
    by the dispatcher's sweep); a refused one leaves it open for dunning, its `payment.failed` saying why."""
    if not result.succeeded:
        return
    invoice_id = int(charge.data["invoice_id"])
    paid = session.execute(
        update(_invoices)
        .where(_invoices.c.id == invoice_id, _invoices.c.status.in_(OPEN))
        .values(status="paid", paid_at=utcnow())
    )
    if cast(CursorResult[Any], paid).rowcount != 1:
        # Paid meanwhile some other way: the money is the account's credit, not lost.
        add_credit(
            session,
            charge.account_id,
            charge.amount,
            kind="payment",
            gateway=charge.gateway,
            currency=charge.currency,
            reference=result.reference,
            note=f"{charge.description} was paid already",
        )
        return
    events.record(
        session,
        EventType.INVOICE_PAID,
        account_id=charge.account_id,
        target_type="invoice",
        target_id=invoice_id,
        data={
            "invoice_id": invoice_id,
            "invoice_number": charge.data.get("invoice_number"),
            "amount": str(charge.amount),
            "gateway": charge.gateway,
            "reference": result.reference,
        },
    )
    lift_dunning(session, charge.account_id)


class MeteringBehind(Exception):
    """The invoice run waits for the metering of the month's last hour (a tick caught up later)."""


def accounts_to_invoice(session: Session, start: datetime, end: datetime) -> list[int]:
    return list(
        session.scalars(
            select(_usage.c.account_id)
            .where(_usage.c.hour_at >= start, _usage.c.hour_at < end)
            .where(
                ~select(_invoices.c.id)
                .where(_invoices.c.account_id == _usage.c.account_id, _invoices.c.period_start == start)
                .exists()
            )
            .distinct()
        )
    )


def invoice_period(core: Core, session: Session, period_start: datetime, now: datetime) -> list[int]:
    """Invoice every account's month from `period_start` not invoiced yet, in the caller's transaction."""
    start, end = month_of(period_start)
    done = []
    for account_id in accounts_to_invoice(session, start, end):
        invoice_id = invoice_account(core, session, account_id, start, now)
        if invoice_id is not None:
            done.append(invoice_id)
    return done


def parse_period(period: str) -> datetime:
    """`2026-11` as the first instant of that month (UTC)."""
    try:
        year, month = (int(x) for x in period.split("-"))
        return datetime(year, month, 1, tzinfo=UTC)
    except ValueError:
        raise ValidationFailed("A period is a month written YYYY-MM, e.g. 2026-11", field="period") from None


def run_invoices(core: Core, principal: Principal, period: str, now: datetime | None = None) -> list[InvoiceView]:
    """Admins: invoice a chosen month now (every account with usage in it and no invoice for it yet), each account
    in a transaction of its own; the invoices made. Run twice, or beside the monthly run, it makes none twice."""
    users.require_admin(principal)
    start, end = month_of(parse_period(period))
    now = now or utcnow()
    if start >= month_of(now)[0]:
        raise InvalidState("Only a month that has ended can be invoiced; this one has not", period=period)
    with core.db.read() as s:
        accounts = accounts_to_invoice(s, start, end)
    made = []
    for account_id in accounts:
        try:
            with core.db.write() as s:
                invoice_id = invoice_account(core, s, account_id, start, now)
        except IntegrityError:
            continue  # another run invoiced it meanwhile
        if invoice_id is not None:
            made.append(invoice_id)
    with core.db.read() as s:
        to_charge = fresh_charges(s, made)
    pay_by_card(core, to_charge)
    with core.db.read() as s:
        return [_invoice_view(s, i) for i in made]


def settle(session: Session, account_id: int, gateway: PaymentGateway, now: datetime) -> list[operations.Accepted]:
    """Pay the account's open invoices, oldest first, through `gateway` while it succeeds, in the caller's
    transaction; lift a dunning suspension once nothing is overdue. The operations to launch after the commit."""
    for inv in session.execute(
        select(_invoices)
        .where(_invoices.c.account_id == account_id, _invoices.c.status.in_(OPEN))
        .order_by(_invoices.c.issued_at, _invoices.c.id)
    ).all():
        if session.scalar(select(Charge.id).where(_charges_of(inv.id), Charge.status == "pending").limit(1)):
            continue  # a card charge of it is out: credit must not pay it twice
        result = gateway.charge(account_id, inv.total, inv.currency, f"Invoice {inv.number}", f"invoice-{inv.id}")
        if not result.succeeded:
            break
        session.execute(update(_invoices).where(_invoices.c.id == inv.id).values(status="paid", paid_at=now))
        events.record(
            session,
            EventType.INVOICE_PAID,
            account_id=account_id,
            target_type="invoice",
            target_id=inv.id,
            data={
                "invoice_id": inv.id,
                "invoice_number": inv.number,
                "amount": str(inv.total),
                "gateway": gateway.name,
            },
        )
    return lift_dunning(session, account_id)


_accounts = table_of(Account)


def lift_dunning(session: Session, account_id: int) -> list[operations.Accepted]:
    """Lift the dunning suspension of an account that owes nothing overdue. Left for the hourly check while any of
    its servers is still busy."""
    suspended = session.scalar(select(_accounts.c.dunning_suspended_at).where(_accounts.c.id == account_id))
    overdue = session.scalar(
        select(func.count()).where(_invoices.c.account_id == account_id, _invoices.c.status == "overdue")
    )
    if suspended is None or overdue:
        return []
    try:
        with session.begin_nested():
            ops = suspension.unsuspend_account_servers(session.connection(), account_id)
    except InvalidState:
        return []
    session.execute(update(_accounts).where(_accounts.c.id == account_id).values(dunning_suspended_at=None))
    events.record(
        session, EventType.ACCOUNT_DUNNING_LIFTED, account_id=account_id, target_type="account", target_id=account_id
    )
    return ops


def check_overdue(core: Core, session: Session, now: datetime) -> tuple[int, list[operations.Accepted]]:
    """Mark the invoices past their due date and grace period overdue; suspend the servers of accounts overdue
    longer than the dunning period; lift the suspension of accounts that paid. How many invoices went overdue, and
    the operations to launch."""
    settings = core.settings
    grace = timedelta(days=settings.billing_grace_days)
    # The deadline worked out here, not in SQL: interval arithmetic differs between the databases.
    late = session.execute(
        select(_invoices.c.id, _invoices.c.account_id, _invoices.c.number, _invoices.c.total).where(
            _invoices.c.status == "pending", _invoices.c.due_at < now - grace
        )
    ).all()
    for inv in late:
        session.execute(update(_invoices).where(_invoices.c.id == inv.id).values(status="overdue", overdue_at=now))
        events.record(
            session,
            EventType.INVOICE_OVERDUE,
            account_id=inv.account_id,
            target_type="invoice",
            target_id=inv.id,
            data={"invoice_id": inv.id, "invoice_number": inv.number, "amount": str(inv.total)},
        )
    ops: list[operations.Accepted] = []
    dunning = grace + timedelta(days=settings.billing_dunning_days)
    to_suspend = session.scalars(
        select(_invoices.c.account_id)
        .join(_accounts, _accounts.c.id == _invoices.c.account_id)
        .where(_invoices.c.status == "overdue", _invoices.c.due_at < now - dunning)
        .where(_accounts.c.dunning_suspended_at.is_(None))
        .distinct()
    ).all()
    for account_id in to_suspend:
        ops += suspension.suspend_account_servers(session.connection(), account_id)
        session.execute(update(_accounts).where(_accounts.c.id == account_id).values(dunning_suspended_at=now))
        events.record(
            session,
            EventType.ACCOUNT_DUNNING_SUSPENDED,
            account_id=account_id,
            target_type="account",
            target_id=account_id,
        )
    for account_id in session.scalars(select(_accounts.c.id).where(_accounts.c.dunning_suspended_at.isnot(None))).all():
        ops += lift_dunning(session, account_id)
    return len(late), ops


def _invoice_view(session: Session, invoice_id: int) -> InvoiceView:
    inv = session.execute(select(_invoices).where(_invoices.c.id == invoice_id)).one()
    items = session.execute(select(_items).where(_items.c.invoice_id == invoice_id).order_by(_items.c.position)).all()
    return _view(inv, items)


def _view(inv: Any, items: Sequence[Any]) -> InvoiceView:
    return InvoiceView(
        id=inv.id,
        account_id=inv.account_id,
        number=inv.number,
        period_start=inv.period_start,
        period_end=inv.period_end,
        status=inv.status,
        currency=inv.currency,
        subtotal=inv.subtotal,
        tax_rate=inv.tax_rate,
        tax=inv.tax,
        total=inv.total,
        issued_at=inv.issued_at,
        due_at=inv.due_at,
        paid_at=inv.paid_at,
        items=[InvoiceLine(i.description, i.quantity, i.unit_price, i.total) for i in items],
    )


def list_invoices(
    core: Core,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    status: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
) -> Page[InvoiceView]:
    """The caller's invoices, newest first; `status`, and issue dates from `start_date` to `end_date`, filter (a
    window ending before it starts holds none)."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}", field="status")
    where: list[ColumnElement[bool]] = [mine(Invoice, principal)]
    if status is not None:
        where.append(_invoices.c.status == status)
    if start_date is not None:
        where.append(_invoices.c.issued_at >= start_date)
    if end_date is not None:
        where.append(_invoices.c.issued_at <= end_date)
    order = [_invoices.c.issued_at.desc(), _invoices.c.id.desc()]
    with core.db.read() as s:
        total = s.scalar(counted(_invoices, where)) or 0
        rows = s.execute(
            paged_window(select(_invoices), _invoices.c.id, where, order, window(total, page, per_page))
        ).all()
        items: dict[int, list[Any]] = defaultdict(list)
        if rows:
            for item in s.execute(
                select(_items).where(_items.c.invoice_id.in_([r.id for r in rows])).order_by(_items.c.position)
            ):
                items[item.invoice_id].append(item)
    return Page(items=[_view(r, items[r.id]) for r in rows], total=total, page=page, per_page=per_page)


def get_invoice(core: Core, principal: Principal, invoice_id: int) -> InvoiceView:
    """The caller's invoice (an admin's: anyone's); another account's is as unknown as one that never existed."""
    with core.db.read() as s:
        owner = s.scalar(select(_invoices.c.account_id).where(_invoices.c.id == invoice_id))
        if owner is None or (owner != principal.account_id and not principal.is_admin):
            raise NotFound("Invoice not found", invoice_id=invoice_id)
        return _invoice_view(s, invoice_id)


@dataclass(frozen=True)
class Buyer:
    name: str
    email: str
    company: str | None


def invoice_pdf(core: Core, principal: Principal, invoice_id: int) -> tuple[InvoiceView, bytes]:
    """The invoice as a PDF: seller, buyer, one row per line, subtotal, tax and total."""
    from cloudplane.services.invoice_pdf import render

    invoice = get_invoice(core, principal, invoice_id)
    with core.db.read() as s:
        account = s.get(Account, invoice.account_id)
        email = s.scalar(select(User.email).where(User.account_id == invoice.account_id).order_by(User.id).limit(1))
    assert account is not None
    buyer = Buyer(account.name, email or account.email, account.company)
    return invoice, render(invoice, core.settings.billing_seller.split("|"), buyer)


def admin_revenue(session: Session, now: datetime) -> dict[str, Any]:
    """For admin stats: money invoiced and paid, this month and in all, and the accounts with overdue invoices."""
    start, _ = month_of(now)

    def total(*where: ColumnElement[bool]) -> str:
        value = session.scalar(select(func.coalesce(func.sum(_invoices.c.total), 0)).where(*where))
        return str(Decimal(str(value)).quantize(pricing.CENT))

    overdue_accounts = session.scalar(
        select(func.count(func.distinct(_invoices.c.account_id))).where(_invoices.c.status == "overdue")
    )
    return {
        "revenue": {
            "currency": pricing.CURRENCY,
            "invoiced_total": total(),
            "paid_total": total(_invoices.c.status == "paid"),
            "paid_this_month": total(_invoices.c.status == "paid", _invoices.c.paid_at >= start),
            "outstanding": total(_invoices.c.status.in_(OPEN)),
        },
        "overdue_accounts": overdue_accounts or 0,
    }


def record_admin_payment(
    core: Core,
    principal: Principal,
    *,
    user_id: int,
    amount: Decimal,
    kind: str,
    reference: str | None = None,
    note: str | None = None,
) -> tuple[int, Balance]:
    """Admins: record a payment received outside any gateway (a bank transfer) or grant a credit, for the user's
    account; it settles what the account's credit now covers, oldest invoice first, and lifts a dunning suspension
    once nothing is overdue. The payment's id and the account's balance after it."""
    users.require_admin(principal)
    if kind not in ("payment", "credit"):
        raise ValidationFailed("kind is `payment` or `credit`", field="kind")
    if amount <= 0 or amount != amount.quantize(pricing.CENT) or amount >= Decimal("1e10"):
        raise ValidationFailed("amount is a positive sum of money, to the cent", field="amount")
    now = utcnow()
    with core.db.write() as s:
        account_id = s.scalar(select(User.account_id).where(User.id == user_id))
        if account_id is None:
            raise NotFound("User not found", user_id=user_id)
        currency = s.scalar(select(_accounts.c.currency).where(_accounts.c.id == account_id)) or pricing.CURRENCY
        payment_id = add_credit(
            s,
            account_id,
            amount,
            kind=kind,
            gateway="offline",
            currency=currency,
            reference=reference,
            note=note,
            actor_user_id=principal.user_id or None,  # the command line's operator is no user
        )
        ops = settle(s, account_id, OfflineGateway(s), now)
    for op in ops:
        operations.launch(op)
    owner = Principal(account_id, user_id, "user")
    return payment_id, balance_of(core, owner, now)
