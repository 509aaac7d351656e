"""The two rules for times: every time this service keeps or shows is UTC, and it is shown in ISO 8601 with `Z`.

A time without a zone (SQLite returns every stored time so, and a client may send one) is taken as UTC, never as
the host's local time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def assume_utc(moment: datetime) -> datetime: ...
@overload
def assume_utc(moment: None) -> None: ...
def assume_utc(moment: datetime | None) -> datetime | None:
    """`moment` with UTC as its zone when it has none; a time with a zone (or None) is returned as it is."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def iso_z(moment: datetime) -> str:
    """ISO 8601 with `Z` for UTC (`2025-01-31T12:00:00.250000Z`), as the documents show times; other zones keep
    their offset."""
    return moment.isoformat().replace("+00:00", "Z")
