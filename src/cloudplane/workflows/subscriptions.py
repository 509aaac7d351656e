"""The end of subscription periods: every hour, on the hour, periods that ended move to their pending tier (a
downgrade, or free after a cancellation) and paid ones roll into their next period, once, whichever process
ticks; every hour missed during a downtime runs after it (a period's end must never be skipped)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.services import subscriptions
from cloudplane.services.users import forget_account
from cloudplane.workflows.schedules import Ran, periodic


@periodic("subscription-periods", every=timedelta(hours=1), catch_up=None)
def end_periods(core: Core, session: Session, tick: datetime) -> Ran:
    summary, changed = subscriptions.apply_period_ends(session, tick)
    if not changed:
        return Ran(summary)

    async def forget() -> None:
        # After the commit: a request meanwhile would cache the old tier again. Other processes: within 10 s.
        for account_id in changed:
            forget_account(account_id)

    return Ran(summary, then=forget)
