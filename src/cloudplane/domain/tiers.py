"""Subscription tiers and the quotas each grants (VibeCaaS document; pro's figures are the document's example)."""

from __future__ import annotations

import calendar
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from cloudplane.domain.pricing import CENT

TIERS = ("free", "hobby", "pro", "team", "enterprise")


@dataclass(frozen=True)
class Quotas:
    max_apps: int
    max_cpu: int  # millicores
    max_memory: int  # MiB
    max_storage: int  # MiB
    gpu_enabled: bool

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


QUOTAS = {
    "free": Quotas(max_apps=3, max_cpu=500, max_memory=1024, max_storage=2048, gpu_enabled=False),
    "hobby": Quotas(max_apps=5, max_cpu=1000, max_memory=2048, max_storage=5120, gpu_enabled=False),
    "pro": Quotas(max_apps=20, max_cpu=2000, max_memory=8192, max_storage=20480, gpu_enabled=True),
    "team": Quotas(max_apps=50, max_cpu=8000, max_memory=32768, max_storage=102400, gpu_enabled=True),
    "enterprise": Quotas(max_apps=1000, max_cpu=64000, max_memory=262144, max_storage=1048576, gpu_enabled=True),
}


# What each tier costs a month, in pricing.CURRENCY (the VibeCaaS document names the tiers but gives no prices).
MONTHLY_PRICE = {
    "free": Decimal("0.00"),
    "hobby": Decimal("7.00"),
    "pro": Decimal("20.00"),
    "team": Decimal("50.00"),
    "enterprise": Decimal("400.00"),
}


def is_upgrade(current: str, new: str) -> bool:
    """Whether moving from `current` to `new` costs more a month (it then applies at once, prorated)."""
    return MONTHLY_PRICE[new] > MONTHLY_PRICE[current]


def add_month(moment: datetime) -> datetime:
    """The same day and time a month later; the month's last day when the next month is shorter (Jan 31 -> Feb 28),
    as Stripe's monthly billing periods run."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def proration(current: str, new: str, start: datetime, end: datetime, now: datetime) -> Decimal:
    """What an upgrade from `current` to `new` at `now` costs for the rest of the period [start, end): the
    difference of the monthly prices times the part of the period left, to the cent (half up). Counted in seconds,
    as Stripe prorates."""
    left = min(max((end - now).total_seconds(), 0.0), (end - start).total_seconds())
    whole = (end - start).total_seconds()
    difference = MONTHLY_PRICE[new] - MONTHLY_PRICE[current]
    if whole <= 0 or difference <= 0:
        return Decimal("0.00")
    return (difference * Decimal(int(left)) / Decimal(int(whole))).quantize(CENT, ROUND_HALF_UP)
