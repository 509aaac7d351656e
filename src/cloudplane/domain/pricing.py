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


# Metering (services/billing.py): what an hour of each resource costs.
# A stopped or suspended server keeps its disk: that disk is billed at a volume's price (DigitalOcean's block
# storage, $0.10 per GB a month) instead of the plan's; an app's storage likewise.
STORAGE_GB_MONTH = Decimal("0.10")
# Transfer beyond a plan's monthly allowance, per GB (DigitalOcean's and Hetzner's order of price).
BANDWIDTH_OVERAGE_GB = Decimal("0.01")
# An app's running replicas: per vCPU and per GiB of memory a month.
APP_VCPU_MONTH = Decimal("5.00")
APP_MEMORY_GB_MONTH = Decimal("2.50")
# Hourly costs are kept to this many places, so that 730 of them add up to the monthly price to the cent.
MICRO = Decimal("0.000001")
BYTES_PER_GB = 1_000_000_000


def hourly_from_monthly(monthly: Decimal) -> Decimal:
    """The hourly price of a monthly one: monthly / 730, as DigitalOcean and Hetzner bill (kept unrounded to the
    cent; a month's total is rounded once)."""
    return (monthly / HOURS_PER_MONTH).quantize(MICRO, ROUND_HALF_UP)


def cost_of_seconds(seconds: int, hourly: Decimal) -> Decimal:
    """What `seconds` at `hourly` cost, to the micro-dollar."""
    return (hourly * seconds / 3600).quantize(MICRO, ROUND_HALF_UP)


def month_cost(hourly_costs: Decimal, monthly_cap: Decimal | None) -> Decimal:
    """A resource's cost over one calendar month: its hours added up, but never more than its monthly price (the
    cap: 744 hours of a 730-hour month cost the monthly price), to the cent."""
    total = hourly_costs if monthly_cap is None else min(hourly_costs, monthly_cap)
    return total.quantize(CENT, ROUND_HALF_UP)


def bandwidth_overage_cost(transfer_bytes: int, allowance_gb: int | None) -> Decimal:
    """Transfer beyond the month's allowance (None: none included) at BANDWIDTH_OVERAGE_GB, to the cent."""
    over_gb = Decimal(transfer_bytes) / BYTES_PER_GB - (allowance_gb or 0)
    return (max(over_gb, Decimal(0)) * BANDWIDTH_OVERAGE_GB).quantize(CENT, ROUND_HALF_UP)


def tax_of(subtotal: Decimal, rate: Decimal) -> Decimal:
    """The tax on an invoice's subtotal at `rate` (0.2 for 20%), to the cent."""
    return (subtotal * rate).quantize(CENT, ROUND_HALF_UP)
