"""Pricing units shared by every face."""

# 8760 hours a year / 12: how an hourly price (a rented GPU) is shown where a document expects a monthly one.
HOURS_PER_MONTH = 730
