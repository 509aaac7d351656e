"""CloudVPS Pro's backups: the document's four routes over a VPS's snapshots, the schedule of automatic backups,
and the hourly run that takes them once per tick whichever process ticks, keeping the newest few."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cloudplane.db.tables import Event, ScheduledRun, Server
from cloudplane.workflows import schedules
from cloudplane.workflows.backups import hourly_backups
from tests.conftest import Tenant, eventually
from tests.integration.test_cloudvps_vps import V1, api, cloudvps_plans, create_running_vps, vps_app, wait_for

__all__ = ["api", "cloudvps_plans", "vps_app"]  # fixtures, used by name

JOB = next(j for j in schedules.jobs() if j.body is hourly_backups)


async def backups_of(api: httpx.AsyncClient, tenant: Tenant, vps_id: str) -> list[dict[str, Any]]:
    r = await api.get(f"{V1}/vps/{vps_id}/backups", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def settled_backups(api: httpx.AsyncClient, tenant: Tenant, vps_id: str) -> list[dict[str, Any]]:
    """The VPS's backups once none is being made or deleted."""

    async def probe() -> list[dict[str, Any]]:
        return await backups_of(api, tenant, vps_id)

    return await eventually(probe, lambda bs: all(b["status"] in ("completed", "failed") for b in bs))


async def test_a_manual_backup_is_taken_listed_restored_and_deleted(api, tenant) -> None:
    vps = await create_running_vps(api, tenant)
    r = await api.post(
        f"{V1}/vps/{vps['id']}/backups",
        json={"name": "Pre-update backup", "description": "Backup before system update"},
        headers=tenant.headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True and body["message"] == "Backup started"
    made = body["data"]
    assert made["id"].startswith("backup-") and made["vps_id"] == vps["id"]
    assert made["name"] == "Pre-update backup" and made["description"] == "Backup before system update"
    assert (made["type"], made["status"], made["size_unit"]) == ("manual", "creating", "GB")
    assert made["operation_id"] and r.headers["operation-location"] == f"{V1}/operations/{made['operation_id']}"

    [listed] = await settled_backups(api, tenant, vps["id"])
    assert listed["id"] == made["id"] and listed["status"] == "completed" and listed["size"] > 0
    assert set(listed) >= {"id", "name", "size", "size_unit", "type", "status", "created_at"}
    # The same object is a LetsCloud snapshot of the server.
    number = vps["id"].removeprefix("vps-")
    snaps = (await api.get(f"/api/servers/{number}/snapshots", headers=tenant.headers)).json()["snapshots"]
    assert [f"backup-{s['id']}" for s in snaps] == [made["id"]]

    # A running VPS is restored: stopped, restored and started again.
    r = await api.post(f"{V1}/vps/{vps['id']}/backups/{made['id']}/restore", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "restoring" and r.json()["message"] == "Backup restore started"
    operation = r.json()["data"]["operation_id"]
    await wait_for(api, tenant, vps["id"], "running")
    op = (await api.get(f"{V1}/operations/{operation}", headers=tenant.headers)).json()["data"]
    assert (op["kind"], op["status"]) == ("restore", "succeeded"), op

    r = await api.delete(f"{V1}/vps/{vps['id']}/backups/{made['id']}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "deleting"
    assert await eventually(lambda: backups_of(api, tenant, vps["id"]), lambda bs: bs == []) == []


async def test_a_stopped_vps_restored_from_a_backup_stays_stopped(api, tenant) -> None:
    vps = await create_running_vps(api, tenant)
    made = (await api.post(f"{V1}/vps/{vps['id']}/backups", json={"name": "b"}, headers=tenant.headers)).json()
    await settled_backups(api, tenant, vps["id"])
    assert (await api.post(f"{V1}/vps/{vps['id']}/stop", headers=tenant.headers)).status_code == 200
    await wait_for(api, tenant, vps["id"], "stopped")
    r = await api.post(f"{V1}/vps/{vps['id']}/backups/{made['data']['id']}/restore", headers=tenant.headers)
    assert r.status_code == 200, r.text
    await wait_for(api, tenant, vps["id"], "stopped")


async def test_backup_routes_answer_in_the_envelope_for_what_does_not_exist(api, tenant, make_tenant) -> None:
    vps = await create_running_vps(api, tenant)
    made = (await api.post(f"{V1}/vps/{vps['id']}/backups", json={"name": "b"}, headers=tenant.headers)).json()
    backup_id = made["data"]["id"]
    await settled_backups(api, tenant, vps["id"])
    intruder = make_tenant()
    for method, path in [
        ("GET", f"{V1}/vps/{vps['id']}/backups"),
        ("POST", f"{V1}/vps/{vps['id']}/backups/{backup_id}/restore"),
        ("DELETE", f"{V1}/vps/{vps['id']}/backups/{backup_id}"),
        ("GET", f"{V1}/vps/{vps['id']}/backups/schedule"),
    ]:
        r = await api.request(method, path, headers=intruder.headers)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["success"] is False and r.json()["error"]["code"] == "NOT_FOUND"
    for bad in ("backup-x", "backup-0", "backup-99999999"):
        r = await api.post(f"{V1}/vps/{vps['id']}/backups/{bad}/restore", headers=tenant.headers)
        assert r.status_code == 404, r.text
    r = await api.post(f"{V1}/vps/{vps['id']}/backups", json={"name": " "}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "name", r.text


async def test_a_backup_of_a_vps_being_deleted_is_refused_with_409(api, tenant) -> None:
    vps = await create_running_vps(api, tenant)
    assert (await api.delete(f"{V1}/vps/{vps['id']}", headers=tenant.headers)).status_code == 200
    r = await api.post(f"{V1}/vps/{vps['id']}/backups", json={"name": "late"}, headers=tenant.headers)
    assert r.status_code in (404, 409), r.text  # 409 while deleting, 404 once gone
    if r.status_code == 409:
        assert r.json()["error"]["code"] == "CONFLICT"


async def test_the_schedule_is_off_until_set_and_validated_field_by_field(api, tenant) -> None:
    vps = await create_running_vps(api, tenant)
    path = f"{V1}/vps/{vps['id']}/backups/schedule"
    r = await api.get(path, headers=tenant.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {
        "vps_id": vps["id"],
        "enabled": False,
        "frequency": "daily",
        "hour": 3,
        "keep": 7,
        "updated_at": None,
    }
    r = await api.put(path, json={"enabled": True, "hour": 5, "keep": 2}, headers=tenant.headers)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["enabled"], data["hour"], data["keep"]) == (True, 5, 2) and data["updated_at"]
    r = await api.put(path, json={"keep": 3}, headers=tenant.headers)
    assert (r.json()["data"]["hour"], r.json()["data"]["keep"]) == (5, 3)  # what is left out stays
    assert (await api.get(path, headers=tenant.headers)).json()["data"]["keep"] == 3
    for body, field in [({"hour": 24}, "hour"), ({"hour": -1}, "hour"), ({"keep": 0}, "keep"), ({"keep": 31}, "keep")]:
        r = await api.put(path, json=body, headers=tenant.headers)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["details"]["field"] == field, r.text
    r = await api.put(path, json={"frequency": "weekly"}, headers=tenant.headers)
    assert r.status_code == 422, r.text
    # Removed, it shows the default (off) again.
    r = await api.delete(path, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["data"]["enabled"] is False, r.text
    assert (await api.get(path, headers=tenant.headers)).json()["data"]["updated_at"] is None


def _automatic(backups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in backups if b["type"] == "automatic"]


def _tick(day: int, hour: int) -> datetime:
    """A tick no other test runs (each test has its own days), in the past, so the service's own sweeps, which
    run the current hour's tick, never run these."""
    return datetime(2026, 1, day, hour, tzinfo=UTC)


async def test_each_tick_runs_once_whichever_process_ticks(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    put = await api.put(
        f"{V1}/vps/{vps['id']}/backups/schedule", json={"enabled": True, "hour": 7}, headers=tenant.headers
    )
    assert put.status_code == 200, put.text
    tick = _tick(1, 7)
    ran = schedules.run_tick(core, JOB, tick, "process-a")
    assert ran is not None and ran.operations
    assert schedules.run_tick(core, JOB, tick, "process-b") is None  # the same tick, another process: nothing
    [backup] = _automatic(await settled_backups(api, tenant, vps["id"]))
    assert (backup["name"], backup["status"]) == ("Daily Backup - 2026-01-01", "completed")
    with core.db.read() as s:
        run = s.scalars(select(ScheduledRun).where(ScheduledRun.job == "backups", ScheduledRun.tick_at == tick)).one()
    assert run.executor_id == "process-a" and "backups started" in (run.summary or "")
    # Another hour's tick leaves this VPS alone.
    schedules.run_tick(core, JOB, _tick(1, 8), "process-a")
    assert len(_automatic(await settled_backups(api, tenant, vps["id"]))) == 1


async def test_retention_keeps_the_newest_automatic_backups_and_every_manual_one(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    path = f"{V1}/vps/{vps['id']}/backups"
    await api.put(f"{path}/schedule", json={"enabled": True, "hour": 9, "keep": 2}, headers=tenant.headers)
    manual = (await api.post(path, json={"name": "mine"}, headers=tenant.headers)).json()["data"]["id"]
    for day in (2, 3, 4):
        assert schedules.run_tick(core, JOB, _tick(day, 9), "process-a") is not None
        await settled_backups(api, tenant, vps["id"])
    everything = await eventually(lambda: settled_backups(api, tenant, vps["id"]), lambda bs: len(_automatic(bs)) == 2)
    assert [b["name"] for b in _automatic(everything)] == ["Daily Backup - 2026-01-03", "Daily Backup - 2026-01-04"]
    assert manual in [b["id"] for b in everything]


async def test_a_busy_vps_misses_its_backup_with_an_event_saying_why(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    await api.put(f"{V1}/vps/{vps['id']}/backups/schedule", json={"enabled": True, "hour": 11}, headers=tenant.headers)
    number = int(vps["id"].removeprefix("vps-"))
    with core.db.write() as s:  # as if an action were running on it
        s.execute(update(Server).where(Server.id == number).values(task_state="rebooting"))
    try:
        ran = schedules.run_tick(core, JOB, _tick(5, 11), "process-a")
    finally:
        with core.db.write() as s:
            s.execute(update(Server).where(Server.id == number).values(task_state=None))
    assert ran is not None and "1 skipped" in ran.summary
    assert _automatic(await backups_of(api, tenant, vps["id"])) == []
    with core.db.read() as s:
        event = s.scalars(select(Event).where(Event.target_id == str(number), Event.type == "vps.backup.failed")).one()
    assert event.data["error"]["code"] == "INVALID_STATE" and "busy" in event.data["error"]["message"]


def test_missed_ticks_run_within_the_jobs_catch_up_window() -> None:
    hourly = schedules.PeriodicJob("t", timedelta(hours=1), hourly_backups, catch_up=timedelta(hours=23))
    everything = schedules.PeriodicJob("t", timedelta(hours=1), hourly_backups, catch_up=None)
    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    # A job that never ran starts with the current tick.
    assert schedules.due_ticks(hourly, None, now) == [datetime(2026, 3, 1, 12, tzinfo=UTC)]
    assert schedules.due_ticks(hourly, datetime(2026, 3, 1, 12, tzinfo=UTC), now) == []
    assert schedules.due_ticks(hourly, datetime(2026, 3, 1, 10, tzinfo=UTC), now) == [
        datetime(2026, 3, 1, 11, tzinfo=UTC),
        datetime(2026, 3, 1, 12, tzinfo=UTC),
    ]
    # Down for three days: the last day's hours run, no older ones.
    three_days = schedules.due_ticks(hourly, datetime(2026, 2, 26, 12, tzinfo=UTC), now)
    assert three_days[0] == datetime(2026, 2, 28, 13, tzinfo=UTC) and len(three_days) == 24
    # With no window every missed tick runs, oldest first, a sweep's worth at a time.
    first = schedules.due_ticks(everything, datetime(2026, 2, 26, 12, tzinfo=UTC), now)
    assert first[0] == datetime(2026, 2, 26, 13, tzinfo=UTC) and len(first) == schedules.CATCH_UP_PER_SWEEP


def test_a_period_must_divide_a_day() -> None:
    with pytest.raises(ValueError, match="divide a day"):
        schedules.periodic("odd", every=timedelta(minutes=7), catch_up=None)
