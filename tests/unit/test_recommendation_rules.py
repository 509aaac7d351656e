"""The cost recommendation rules on recorded histories: hour-by-hour usage written out here, as the hourly roll-up
keeps it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cloudplane.services import recommendations as rec
from cloudplane.services.recommendations import Hour, ServerFacts, Size, SnapshotFacts

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
MB = 1_000_000
# The seeded catalog's plans (services/catalog.py), as the rules see them.
PLANS = [
    Size("basic-1gb", "Basic 1GB", 1, 1024, 25, Decimal("5.00")),
    Size("basic-2gb", "Basic 2GB", 1, 2048, 50, Decimal("10.00")),
    Size("standard-2gb", "Standard 2GB", 2, 2048, 60, Decimal("15.00")),
    Size("standard-4gb", "Standard 4GB", 2, 4096, 80, Decimal("24.00")),
    Size("performance-8gb", "Performance 8GB", 4, 8192, 160, Decimal("48.00")),
]
PLAN = {p.slug: p for p in PLANS}


def server(slug: str = "performance-8gb", **overrides: Any) -> ServerFacts:
    size = PLAN[slug]
    facts = ServerFacts(
        id=12,
        label="web",
        status="running",
        gpu=False,
        monthly=size.monthly,
        held_monthly=rec.held_monthly(size.disk_gb),
        plan=size,
        location="nyc1",
        image="ubuntu-22-04",
    )
    return replace(facts, **overrides)


def history(
    days: float, cpu: float, memory_mb: int, network_mb: float = 50.0, disk_mb: int | None = 4000
) -> list[Hour]:
    return [Hour(cpu, memory_mb, disk_mb, int(network_mb * MB)) for _ in range(int(days * 24))]


def busy() -> list[Hour]:
    """A web server working through the day: 40-80% CPU, 5-6 GB of its 8 GB in use."""
    return [
        Hour(40.0 + 40.0 * (h % 24 >= 9 and h % 24 < 18), 5000 + 1000 * (h % 24 >= 9 and h % 24 < 18), 90_000, 900 * MB)
        for h in range(14 * 24)
    ]


def idle_history() -> list[Hour]:
    """Nothing runs: 1-2% CPU (cron, the agent), a few KB an hour."""
    return [Hour(1.0 + (h % 3) / 2, 350, 3000, 20_000) for h in range(10 * 24)]


def quiet_but_small() -> list[Hour]:
    """Not idle (10-15% CPU, 200 MB of transfer an hour), yet 1.2 GB of memory at most: far below 8 GB."""
    return [Hour(10.0 + 5 * (h % 2), 900 + 300 * (h % 24 == 20), 6000, 200 * MB) for h in range(14 * 24)]


def spiky() -> list[Hour]:
    """As quiet, but one nightly job fills 7 GB: the peak forbids any smaller plan."""
    return [Hour(10.0, 7000 if h % 24 == 3 else 900, 6000, 200 * MB) for h in range(14 * 24)]


def summary(hours: list[Hour]) -> rec.UsageSummary:
    found = rec.summarize(hours)
    assert found is not None
    return found


def test_p95_is_the_nearest_rank() -> None:
    assert rec.p95(list(range(1, 101))) == 95
    assert rec.p95([3.0]) == 3.0
    # One hour in twenty at 100% is within the 5% a p95 ignores; two are not.
    assert rec.p95([1.0] * 19 + [100.0]) == 1.0
    assert rec.p95([1.0] * 18 + [100.0] * 2) == 100.0


def test_an_idle_server_is_to_be_stopped_saving_all_but_its_disk() -> None:
    usage = summary(idle_history())
    found = rec.idle(server(), usage)
    assert found is not None
    assert found.kind == "idle_server" and found.resource_id == 12
    # performance-8gb: $48 a month; stopped, its 160 GB disk costs $16.
    assert found.monthly_saving == Decimal("32.00")
    assert found.action.request == "POST /api/servers/12/stop"
    assert found.evidence["hours_of_samples"] == 240
    assert found.evidence["cpu_p95_percent"] == 2.0 and found.evidence["network_p95_mb_per_hour"] == 0.02
    assert found.confidence == "high"
    assert "2.0%" in found.why


def test_a_busy_server_is_neither_idle_nor_oversized() -> None:
    usage = summary(busy())
    assert not rec.is_idle(usage)
    assert rec.idle(server(), usage) is None
    assert rec.oversized(server(), usage, PLANS) is None


def test_a_quiet_server_on_a_big_plan_is_offered_the_cheapest_plan_that_fits_its_peak() -> None:
    usage = summary(quiet_but_small())
    assert rec.idle(server(), usage) is None  # 200 MB an hour is use
    found = rec.oversized(server(), usage, PLANS)
    assert found is not None and found.kind == "oversized_plan"
    # Peak 1200 MB + 20% = 1440 MB: basic-1gb is too small; 15% p95 of 4 vCPU = 0.6 (+20%: 0.72) fits one vCPU.
    assert found.evidence["suggested_plan"] == "basic-2gb"
    assert found.evidence["memory_peak_mb"] == 1200
    assert found.monthly_saving == Decimal("38.00")
    assert found.action.request == "POST /api/servers"
    assert found.action.body == {
        "label": "web",
        "plan_slug": "basic-2gb",
        "image_slug": "ubuntu-22-04",
        "location_slug": "nyc1",
    }


def test_a_spiky_servers_peak_forbids_downsizing() -> None:
    usage = summary(spiky())
    assert usage.memory_peak_mb == 7000
    assert rec.oversized(server(), usage, PLANS) is None


def test_cpu_peaks_need_the_cpus_they_used() -> None:
    # p95 20% of 4 vCPU is 0.8 (+20%: 0.96) but one hour at 60% used 2.4 vCPU: only a 4-vCPU plan holds it.
    hours = history(14, cpu=20.0, memory_mb=900) + [Hour(60.0, 900, 4000, 50 * MB)]
    assert rec.oversized(server(), summary(hours), PLANS) is None


def test_the_data_on_the_disk_must_fit_the_smaller_plan() -> None:
    hours = history(14, cpu=10.0, memory_mb=900, disk_mb=60_000)  # 60 GB (+20%) fit none below 80 GB
    assert rec.smaller_plan(PLAN["performance-8gb"], summary(hours), PLANS) == PLAN["standard-4gb"]
    unknown = history(14, cpu=10.0, memory_mb=900, disk_mb=None)  # not known: the whole disk, 160 GB
    assert rec.smaller_plan(PLAN["performance-8gb"], summary(unknown), PLANS) is None


def test_too_little_history_is_a_note_not_a_guess() -> None:
    short = summary(idle_history()[:48])
    assert rec.enough_history(server(), short) == (
        "server 12 (web): 48 hours of usage recorded in the window, 72 needed before judging it"
    )
    found, notes = rec.judge([server()], {12: short}, {"nyc1": PLANS}, [], NOW)
    assert found == [] and notes == [rec.enough_history(server(), short)]
    found, notes = rec.judge([server()], {12: None}, {"nyc1": PLANS}, [], NOW)
    assert found == [] and "0 hours" in notes[0]


def test_a_server_stopped_for_more_than_a_week_pays_for_its_disk() -> None:
    long_ago = server(status="stopped", stopped_at=NOW - timedelta(days=9, hours=12))
    found = rec.stopped(long_ago, NOW)
    assert found is not None and found.kind == "stopped_server_disk"
    assert found.monthly_saving == Decimal("16.00")  # 160 GB at $0.10
    assert found.evidence["days_stopped"] == 9.5
    assert found.action.request == "DELETE /api/servers/12"
    assert rec.stopped(server(status="stopped", stopped_at=NOW - timedelta(days=6)), NOW) is None
    assert rec.stopped(server(status="running"), NOW) is None


def test_gpu_instances_idle_or_stopped_while_rented() -> None:
    gpu = server(
        gpu=True, plan=None, location=None, image=None, monthly=Decimal("365.00"), held_monthly=Decimal("5.00")
    )
    found = rec.idle(gpu, summary(idle_history()))
    assert found is not None and found.kind == "idle_gpu_instance" and found.resource_type == "gpu_instance"
    assert found.monthly_saving == Decimal("360.00")
    parked = rec.stopped(replace(gpu, status="stopped", stopped_at=NOW - timedelta(days=20)), NOW)
    assert parked is not None and parked.kind == "idle_gpu_instance" and parked.monthly_saving == Decimal("5.00")
    # A marketplace that reports nothing: said so, never guessed.
    found, notes = rec.judge([gpu], {12: None}, {}, [], NOW)
    assert found == [] and notes == [
        "GPU instance 12 (web): its provider reports no usage figures, so whether it is idle cannot be told"
    ]


def test_old_snapshots_save_no_money_but_are_named() -> None:
    old = SnapshotFacts(7, 12, "before upgrade", 25, NOW - timedelta(days=45))
    found = rec.old_snapshot(old, NOW)
    assert found is not None and found.kind == "old_snapshot"
    assert found.monthly_saving == Decimal("0.00") and found.confidence == "low"
    assert found.evidence == {
        "age_days": 45.0,
        "created_at": old.created_at.isoformat(),
        "size_gb": 25,
        "server_id": 12,
    }
    assert found.action.request == "DELETE /api/servers/12/snapshots/7"
    assert rec.old_snapshot(SnapshotFacts(8, 12, "new", 25, NOW - timedelta(days=3)), NOW) is None


def test_judge_sorts_by_saving_and_runs_one_rule_per_server() -> None:
    idle_one = server()
    small = server(id=13, label="api")
    parked = server("basic-1gb", id=14, label="old", status="stopped", stopped_at=NOW - timedelta(days=30))
    snap = SnapshotFacts(7, 14, "s", 25, NOW - timedelta(days=40))
    found, notes = rec.judge(
        [parked, small, idle_one],
        {12: summary(idle_history()), 13: summary(quiet_but_small()), 14: None},
        {"nyc1": PLANS},
        [snap],
        NOW,
    )
    assert notes == []
    assert [(r.kind, r.resource_id, r.monthly_saving) for r in found] == [
        ("oversized_plan", 13, Decimal("38.00")),
        ("idle_server", 12, Decimal("32.00")),  # idle, so not also offered a smaller plan
        ("stopped_server_disk", 14, Decimal("2.50")),
        ("old_snapshot", 7, Decimal("0.00")),
    ]
