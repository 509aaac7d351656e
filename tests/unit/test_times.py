"""The time rules: a time without a zone is UTC, and UTC is shown with `Z`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from cloudplane.domain.times import assume_utc, iso_z


def test_a_time_without_a_zone_is_taken_as_utc_not_as_local_time() -> None:
    assert assume_utc(datetime(2025, 1, 31, 12, 0)) == datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert assume_utc(datetime(2025, 1, 31, 12, 0)).tzinfo is UTC


def test_a_time_with_a_zone_is_kept_as_it_is() -> None:
    paris = datetime(2025, 1, 31, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert assume_utc(paris) is paris
    assert assume_utc(None) is None


def test_utc_is_shown_with_z_and_other_zones_with_their_offset() -> None:
    assert iso_z(datetime(2025, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)) == "2025-01-31T12:00:00.250000Z"
    assert iso_z(datetime(2025, 1, 31, 12, 0, tzinfo=timezone(timedelta(hours=-3)))) == "2025-01-31T12:00:00-03:00"
