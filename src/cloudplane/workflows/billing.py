"""The billing jobs: every hour, the hour that just ended is metered (every hour once, however many processes run,
and each hour a downtime missed caught up: none lost, none doubled); every day, on the 1st, the month that ended is
invoiced, and the invoices credit does not cover are charged to the card on file after the tick commits; every hour,
invoices past due go overdue and dunning suspends or lifts; every few minutes, charges left pending (a process died
between asking Stripe and settling) are looked up at Stripe and settled."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.services import billing, charges
from cloudplane.workflows import schedules
from cloudplane.workflows.schedules import Ran, periodic

METERING = "billing-metering"


# Every missed hour is metered after a downtime (catch_up None): an hour of usage must never be lost.
@periodic(METERING, every=billing.HOUR, catch_up=None)
def meter(core: Core, session: Session, tick: datetime) -> Ran:
    written = billing.meter_hour(session, tick - billing.HOUR)
    return Ran(f"{written} usage records for the hour to {tick.isoformat()}")


# Every missed day runs (catch_up None) so that a downtime over the 1st still invoices the month; on other days the
# tick does nothing.
@periodic("billing-invoices", every=timedelta(days=1), catch_up=None)
def invoice_month(core: Core, session: Session, tick: datetime) -> Ran:
    if tick.day != 1:
        return Ran("not the first of the month")
    period_end = tick
    metered = schedules.last_tick(core, METERING)
    if metered is None or metered < period_end:
        # The month's last hour is metered by the tick at its end; this tick stays due until then.
        raise billing.MeteringBehind(f"metering has reached {metered}, not {period_end}")
    made = billing.invoice_period(core, session, period_end - timedelta(days=1), tick)
    to_charge = billing.fresh_charges(session, made)
    summary = f"{len(made)} invoices for the month to {period_end:%Y-%m-%d}, {len(to_charge)} to charge to a card"
    if not to_charge:
        return Ran(summary)

    async def charge_cards() -> None:
        # After the commit and outside any transaction; one a crash loses is left pending for the sweep below.
        await asyncio.to_thread(billing.pay_by_card, core, to_charge)

    return Ran(summary, then=charge_cards)


# Only the current hour (catch_up 0): the check works from the invoices' due dates, so one run after a downtime
# does what every missed one would have.
@periodic("billing-overdue", every=billing.HOUR, catch_up=timedelta(0))
def dunning(core: Core, session: Session, tick: datetime) -> Ran:
    overdue, started = billing.check_overdue(core, session, tick)
    return Ran(f"{overdue} invoices overdue, {len(started)} suspension operations", started)


# Only the current tick (catch_up 0): each sweep looks at every charge left pending, whenever it was left.
@periodic("charges-sweep", every=timedelta(minutes=5), catch_up=timedelta(0), every_setting="charges_sweep_s")
def sweep_charges(core: Core, session: Session, tick: datetime) -> Ran:
    left = charges.stuck(session, tick)
    if not left:
        return Ran("no charge left pending")

    async def resolve() -> None:
        # After the commit: Stripe is asked outside any transaction, each charge settled in one of its own.
        for charge_id in left:
            await charges.resolve(core, charge_id)

    return Ran(f"{len(left)} charges left pending to look up", then=resolve)
