"""Prices, computed once for every face: money is `Decimal`; an hourly price becomes a monthly one here, and a
monthly one a yearly one."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "USD"  # the catalog's and the marketplaces' prices are in US dollars
CENT = Decimal("0.01")
# 8760 hours a year / 12: how an hourly price (a rented GPU) is shown where a document expects a monthly one.
HOURS_PER_MONTH = 730
# Monthly transfer allowance per GB of RAM: the CloudVPS document's examples give 1000 GB for 2 GB of RAM and
# 2000 GB for 4 GB.
BANDWIDTH_GB_PER_RAM_GB = 500


def money_text(amount: Decimal) -> str:
    """An amount as the documents that write money as a string show it: to the cent, "5.00"."""
    return str(Decimal(amount).quantize(CENT, ROUND_HALF_UP))


def monthly_from_hourly(hourly: Decimal) -> Decimal:
    """The monthly price of an hourly one, to the cent (half up, as a bill rounds)."""
    return (hourly * HOURS_PER_MONTH).quantize(CENT, ROUND_HALF_UP)


def annual_from_monthly(monthly: Decimal) -> Decimal:
    """Ten months' price (two months free) at the nearest price ending in .99, as the CloudVPS document prices
    Starter: 9.99 a month, 99.99 a year."""
    ten_months = monthly.quantize(CENT, ROUND_HALF_UP) * 10
    if ten_months < 1:
        return ten_months
    return (ten_months + CENT).quantize(Decimal(1), ROUND_HALF_UP) - CENT


def transfer_allowance_gb(ram_mb: int) -> int:
    """The monthly transfer a catalog plan with this much RAM includes."""
    return round(BANDWIDTH_GB_PER_RAM_GB * ram_mb / 1024)
