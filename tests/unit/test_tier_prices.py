"""Monthly periods and the proration of an upgrade (domain/tiers.py), as Stripe counts them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cloudplane.domain.tiers import MONTHLY_PRICE, TIERS, add_month, is_upgrade, proration
from cloudplane.services.subscriptions import period_of


def at(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day, 9, 30, tzinfo=UTC)


def test_every_tier_has_a_price_rising_with_the_tier() -> None:
    prices = [MONTHLY_PRICE[tier] for tier in TIERS]
    assert prices == sorted(prices) and prices[0] == Decimal("0.00")
    assert is_upgrade("free", "hobby") and is_upgrade("pro", "team") and not is_upgrade("team", "pro")


def test_a_month_later_keeps_the_day_or_takes_the_months_last() -> None:
    assert add_month(at(1, 15)) == at(2, 15)
    assert add_month(at(1, 31)) == at(2, 28)
    assert add_month(at(1, 31, 2028)) == at(2, 29, 2028)
    assert add_month(at(12, 31)) == at(1, 31, 2027)


def test_the_period_holding_now_counts_from_the_anchor() -> None:
    assert period_of(at(1, 31), at(3, 1)) == (at(2, 28), at(3, 28))
    assert period_of(at(1, 10), at(1, 10)) == (at(1, 10), at(2, 10))


def test_an_upgrade_costs_the_difference_for_what_is_left() -> None:
    start = at(4, 1)
    end = start + timedelta(days=30)
    assert proration("hobby", "team", start, end, start + timedelta(days=10)) == Decimal("28.67")  # 43 * 2/3
    assert proration("pro", "team", start, end, start) == Decimal("30.00")  # the whole period
    assert proration("pro", "team", start, end, end) == Decimal("0.00")  # nothing left
    assert proration("pro", "team", start, end, end + timedelta(days=3)) == Decimal("0.00")
    assert proration("team", "pro", start, end, start) == Decimal("0.00")  # a downgrade is never a charge
