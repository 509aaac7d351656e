"""CloudVPS Pro's GET /vps/{id}/metrics: usage now and its history, from samples of the provider's counters (the
simulator's synthetic load here; tests/e2e/test_lxc_metrics.py burns a real container's CPU), rolled up by the
hour and kept bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from cloudplane.db.tables import ServerSample, utcnow
from cloudplane.providers.base import Metrics
from cloudplane.services import metrics
from cloudplane.services.metrics import Reading
from cloudplane.workflows import schedules
from cloudplane.workflows.metrics import roll_up_hour, sample_servers
from tests.conftest import eventually
from tests.integration.test_cloudvps_vps import V1, api, cloudvps_plans, create_running_vps, vps_app, wait_for

__all__ = ["api", "cloudvps_plans", "vps_app"]  # fixtures, used by name

SAMPLE_JOB = next(j for j in schedules.jobs() if j.body is sample_servers)
ROLLUP_JOB = next(j for j in schedules.jobs() if j.body is roll_up_hour)


def _between_ticks(minutes_ago: int) -> datetime:
    """A moment `minutes_ago`, half way between two of the service's own sampling ticks (which fall on whole
    minutes), so a sample this test takes never has the time of one the service takes."""
    now = utcnow().replace(second=0, microsecond=0)
    return now - timedelta(minutes=minutes_ago) + timedelta(seconds=30)


def _number(vps: dict) -> int:
    return int(vps["id"].removeprefix("vps-"))


async def test_samples_of_a_running_vps_show_as_usage_now_and_history(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    first, second = _between_ticks(3), _between_ticks(2)
    assert await metrics.sample(core, first) >= 1
    assert await metrics.sample(core, second) >= 1
    r = await api.get(f"{V1}/vps/{vps['id']}/metrics", headers=tenant.headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert 0 < data["cpu_usage"] <= 100 and 0 < data["ram_usage"] <= 100 and 0 < data["disk_usage"] <= 100
    assert data["uptime"] >= 0 and data["interval"] == 60
    assert data["units"] == {
        "cpu_usage": "percent",
        "ram_usage": "percent",
        "disk_usage": "percent",
        "network_in": "MB",
        "network_out": "MB",
        "uptime": "seconds",
    }
    mine = {datetime.fromisoformat(p["timestamp"]): p for p in data["metrics_history"]}
    assert first in mine, mine.keys()
    point = mine[second]
    assert set(point) == {"timestamp", "cpu", "ram", "disk", "network_in", "network_out"}
    # Over the period: the sum of its points.
    assert data["network_in"] == pytest.approx(sum(p["network_in"] for p in data["metrics_history"]), abs=0.01)


async def test_a_stopped_vps_shows_no_usage_now(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    await metrics.sample(core, _between_ticks(4))
    assert (await api.post(f"{V1}/vps/{vps['id']}/stop", headers=tenant.headers)).status_code == 200
    await wait_for(api, tenant, vps["id"], "stopped")
    data = (await api.get(f"{V1}/vps/{vps['id']}/metrics", headers=tenant.headers)).json()["data"]
    assert (data["cpu_usage"], data["ram_usage"], data["uptime"]) == (0.0, 0.0, 0)
    assert data["metrics_history"], "what was sampled while it ran stays in its history"


async def test_an_hour_of_samples_rolls_up_into_one_point_and_old_rows_go(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    number = _number(vps)
    hour = (utcnow() - timedelta(hours=30)).replace(minute=0, second=0, microsecond=0)
    readings = [(10, 20.0, 1000), (15, 40.0, 3000), (20, 60.0, 6000)]
    for minute, cpu, rx in readings:
        at = hour + timedelta(minutes=minute, seconds=17)
        metrics.record(core, at, [Reading(number, Metrics(cpu, 512, 0, 0, rx, rx // 2, disk_used_mb=2048))])
    ran = schedules.run_tick(core, ROLLUP_JOB, hour + timedelta(hours=1), "process-a")
    assert ran is not None and "rolled up" in ran.summary
    start = (hour - timedelta(minutes=30)).isoformat()
    end = (hour + timedelta(minutes=90)).isoformat()
    r = await api.get(
        f"{V1}/vps/{vps['id']}/metrics", params={"start_time": start, "end_time": end}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["interval"] == 3600
    [point] = data["metrics_history"]
    assert point["cpu"] == 40.0 and point["network_in"] == pytest.approx((2000 + 3000) / 1e6)
    # Of the professional plan's 4 GB of memory and 50 GB of disk.
    assert (point["ram"], point["disk"]) == (12.5, 4.0)
    # A day later its samples are gone and the hour stays.
    schedules.run_tick(core, ROLLUP_JOB, hour + timedelta(days=1, hours=2), "process-a")
    with core.db.read() as s:
        left = dict(
            s.execute(
                select(ServerSample.resolution_s, func.count())
                .where(ServerSample.server_id == number)
                .group_by(ServerSample.resolution_s)
            ).all()
        )
    assert left == {metrics.HOUR_S: 1}


async def test_the_sampling_tick_samples_every_running_server_after_it_commits(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    tick = _between_ticks(6)
    ran = schedules.run_tick(core, schedules.configured(SAMPLE_JOB, core), tick, "process-a")
    assert ran is not None and ran.then is not None

    def sampled() -> int:
        with core.db.read() as s:
            return s.scalar(select(func.count()).where(ServerSample.server_id == _number(vps), ServerSample.at == tick))

    async def probe() -> int:
        return sampled()

    assert await eventually(probe, lambda n: n == 1) == 1
    assert schedules.run_tick(core, SAMPLE_JOB, tick, "process-b") is None  # once, whichever process ticks


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"period": "year"}, "period"),
        ({"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, "start_time"),
        ({"start_time": "2026-01-01T00:00:00"}, "start_time"),  # no time zone
        ({"start_time": "2025-01-01T00:00:00Z", "end_time": "2025-03-01T00:00:00Z"}, "start_time"),
    ],
)
async def test_bad_periods_are_422_naming_the_field(api, tenant, params, field) -> None:
    vps = await create_running_vps(api, tenant)
    r = await api.get(f"{V1}/vps/{vps['id']}/metrics", params=params, headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert field in r.text


def test_bytes_since_the_previous_sample_survive_a_counter_restart() -> None:
    assert metrics._since(None, 5000) == 0
    assert metrics._since(1000, 5000) == 4000
    assert metrics._since(9000, 300) == 300  # the machine restarted: its count began again


def test_the_interval_must_divide_an_hour() -> None:
    from pydantic import ValidationError

    from cloudplane.config import Settings

    with pytest.raises(ValidationError, match="divides an hour"):
        Settings(metrics_sample_interval_s=7)
    assert Settings(metrics_sample_interval_s=5).metrics_sample_interval_s == 5


def test_rollup_tick_boundaries_are_whole_hours() -> None:
    tick = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert schedules.tick_of(tick + timedelta(minutes=59), ROLLUP_JOB.every) == tick


async def test_a_sampling_pass_holds_a_batch_of_servers_at_a_time(api, tenant, core, monkeypatch) -> None:
    """However many servers run, a pass reads, asks about and records SAMPLING_BATCH of them at a time: its memory
    and its transactions do not grow with the fleet."""
    made = [await create_running_vps(api, tenant) for _ in range(5)]
    recorded: list[list[int]] = []
    record = metrics.record

    def spy(core, at, readings) -> None:
        recorded.append([r.server_id for r in readings])
        record(core, at, readings)

    monkeypatch.setattr(metrics, "SAMPLING_BATCH", 2)
    monkeypatch.setattr(metrics, "record", spy)
    assert await metrics.sample(core, _between_ticks(5)) >= 5
    assert max(len(batch) for batch in recorded) <= 2
    sampled = [server for batch in recorded for server in batch]
    assert sorted(sampled) == sorted(set(sampled)), "no server twice in a pass"
    assert {_number(v) for v in made} <= set(sampled)
