"""The billing rules without a database: prices per hour and per month (the cap), a server's seconds from its
history, tax and transfer beyond the allowance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cloudplane.domain import pricing
from cloudplane.services.billing import month_of, server_seconds

H = datetime(2026, 3, 10, 14, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return H + timedelta(minutes=minutes)


def test_hourly_is_monthly_over_730_and_a_month_is_capped_at_the_monthly_price() -> None:
    hourly = pricing.hourly_from_monthly(Decimal("19.99"))
    assert hourly == Decimal("0.027384")
    assert pricing.month_cost(hourly * 730, Decimal("19.99")) == Decimal("19.99")
    assert pricing.month_cost(hourly * 744, Decimal("19.99")) == Decimal("19.99")  # a 31-day month: capped
    assert pricing.month_cost(hourly * 100, Decimal("19.99")) == Decimal("2.74")
    assert pricing.month_cost(Decimal("0.5") * 744, None) == Decimal("372.00")  # a GPU: no cap


def test_a_server_s_seconds_come_from_its_events() -> None:
    created, stopped, started = "vps.created", "vps.stopped", "vps.started"
    # Running all hour since an earlier hour.
    assert server_seconds([(H - timedelta(days=3), created, {})], H) == (3600, 0)
    # Created at :15, stopped at :45.
    assert server_seconds([(at(15), created, {}), (at(45), stopped, {})], H) == (1800, 900)
    # Stopped before the hour, started at :30.
    assert server_seconds(
        [(H - timedelta(hours=2), created, {}), (H - HOUR1, stopped, {}), (at(30), started, {})], H
    ) == (
        1800,
        1800,
    )
    # Suspended at :20 (held, not running), lifted at :50: it runs again.
    history = [(H - HOUR1, created, {}), (at(20), "vps.suspended", {}), (at(50), "vps.unsuspended", {})]
    assert server_seconds(history, H) == (1800, 1800)
    # Deleted at :10; and a server whose create never succeeded is never billed.
    assert server_seconds([(H - HOUR1, created, {}), (at(10), "vps.deleted", {})], H) == (600, 0)
    assert server_seconds([(at(5), "vps.create_failed", {})], H) == (0, 0)
    # The reconciler found it stopped at :40.
    assert server_seconds([(H - HOUR1, created, {}), (at(40), "vps.drifted", {"to": "stopped"})], H) == (2400, 1200)
    # Events after the hour do not count.
    assert server_seconds([(H + timedelta(hours=2), created, {})], H) == (0, 0)


HOUR1 = timedelta(hours=1)


def test_tax_transfer_and_months() -> None:
    assert pricing.tax_of(Decimal("33.33"), Decimal("0.2")) == Decimal("6.67")
    assert pricing.bandwidth_overage_cost(1_500 * pricing.BYTES_PER_GB, 1000) == Decimal("5.00")
    assert pricing.bandwidth_overage_cost(10, 1000) == Decimal("0.00")
    assert month_of(datetime(2024, 2, 29, 23, 59, tzinfo=UTC)) == (
        datetime(2024, 2, 1, tzinfo=UTC),
        datetime(2024, 3, 1, tzinfo=UTC),
    )
