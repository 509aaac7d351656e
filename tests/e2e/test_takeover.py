"""Two API processes on one database: one is SIGKILLed in the middle of creates and deletes and never comes back;
the other sees its heartbeat stop, claims it and finishes every one of its operations within a bounded time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import create_engine, select

from cloudplane.db.tables import Executor, Operation
from tests.e2e.conftest import ServiceProcess, assert_provider_matches_database

BODY = {"label": "takeover", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}
STALE_AFTER_S = 3.0
# Heartbeat stale, one sweep to notice, then the resumed workflows' own remaining work (a create here takes ~3 s).
BOUND_S = STALE_AFTER_S + 10
SETTINGS = {
    # Every provider call takes 0.3-0.9 s and a machine boots in 1.2 s, so A dies with its work in flight.
    "simulator_time_scale": "0.2",
    "simulator_latency_ms": "600",
    "rate_limits_enabled": "false",
    "reconcile_interval_s": "0",
    "dispatch_interval_s": "0.5",
    "executor_stale_after_s": str(STALE_AFTER_S),
}


def operation_id(reply: httpx.Response) -> str:
    assert reply.status_code in (201, 204), reply.text
    location = reply.headers["Operation-Location"]
    assert location.startswith("/api/operations/"), location
    return location.rsplit("/", 1)[1]


def status_of(client: httpx.Client, op_id: str) -> str:
    r = client.get(f"/api/v1/operations/{op_id}")
    assert r.status_code == 200, r.text
    status: str = r.json()["data"]["status"]
    return status


def server_status(client: httpx.Client, server_id: int) -> str:
    r = client.get(f"/api/servers/{server_id}")
    if r.status_code == 404:
        return "gone"
    assert r.status_code == 200, r.text
    seen: dict[str, Any] = r.json()
    return seen["status"] if seen["task_state"] is None else f"{seen['status']}/{seen['task_state']}"


def unfinished_at(database_url: str, op_ids: list[str]) -> dict[str, tuple[str, str]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Operation.id, Operation.kind, Operation.status).where(
                    Operation.id.in_(op_ids), Operation.status.in_(["pending", "running"])
                )
            ).all()
    finally:
        engine.dispose()
    return {row.id: (row.kind, row.status) for row in rows}


def held_by(database_url: str, executor_id: str, op_ids: list[str]) -> set[str]:
    """Which of these operations that executor holds unfinished: work only its own restart or a takeover finishes
    (another process's sweep starts pending operations, never ones a live executor holds)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return set(
                conn.scalars(
                    select(Operation.id).where(
                        Operation.id.in_(op_ids),
                        Operation.executor_id == executor_id,
                        Operation.status.in_(["pending", "running"]),
                    )
                )
            )
    finally:
        engine.dispose()


def test_a_killed_process_has_its_operations_finished_by_another(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    a = service_factory(**SETTINGS, executor_id="takeover-a")
    a.start()
    assert a.api_key, "first start must print a bootstrap key"
    b = service_factory(**SETTINGS, executor_id="takeover-b")
    b.start()  # after A, which made the database
    database_url = a.env["CLOUDPLANE_DATABASE_URL"]
    assert b.env["CLOUDPLANE_DATABASE_URL"] == database_url and b.port != a.port
    headers = {"Authorization": f"Bearer {a.api_key}"}

    with httpx.Client(base_url=a.url, headers=headers, timeout=30) as client:
        existing = [client.post("/api/servers", json={**BODY, "label": f"old-{n}"}).json()["id"] for n in range(4)]
        deadline = time.monotonic() + 60
        while any(server_status(client, i) != "running" for i in existing):
            assert time.monotonic() < deadline, "the servers to delete did not come up"
            time.sleep(0.2)

        expected: dict[int, str] = {existing[3]: "running"}
        op_ids: list[str] = []
        for n in range(5):
            r = client.post("/api/servers", json={**BODY, "label": f"new-{n}"})
            op_ids.append(operation_id(r))
            expected[r.json()["id"]] = "running"
        for i in existing[:3]:
            op_ids.append(operation_id(client.delete(f"/api/servers/{i}")))
            expected[i] = "gone"
    a.kill()  # and it never comes back
    killed_at = time.monotonic()

    in_flight = unfinished_at(database_url, op_ids)
    stranded = held_by(database_url, "takeover-a", op_ids)
    # Started in A and unfinished there: only a takeover can finish these. The rest A had not claimed yet (the last
    # hand-off may not have run before the kill): they are pending, for any process's sweep.
    assert stranded, f"A held nothing unfinished when it died: {in_flight}"
    assert {op for op, (_, status) in in_flight.items() if status == "running"} == stranded, (stranded, in_flight)
    assert {kind for kind, _ in in_flight.values()} == {"create", "delete"}, f"A died too late: {in_flight}"

    with httpx.Client(base_url=b.url, headers=headers, timeout=30) as client:
        left = set(op_ids)
        while left and time.monotonic() - killed_at < BOUND_S:
            left = {op for op in left if status_of(client, op) not in ("succeeded", "failed")}
            time.sleep(0.1)
        took = time.monotonic() - killed_at
        assert not left, (
            f"B had not finished A's operations {BOUND_S}s after A died: {unfinished_at(database_url, op_ids)}"
        )
        print(
            f"\ntakeover: B finished A's {len(op_ids)} operations ({len(in_flight)} in flight at the kill) "
            f"{took:.1f}s after A was SIGKILLed (executor_stale_after_s={STALE_AFTER_S}, bound {BOUND_S}s)"
        )
        assert [status_of(client, op) for op in op_ids] == ["succeeded"] * len(op_ids)
        assert {i: server_status(client, i) for i in expected} == expected
    b.stop()

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            taken_over_by = conn.scalar(select(Executor.taken_over_by).where(Executor.id == "takeover-a"))
    finally:
        engine.dispose()
    assert taken_over_by == "takeover-b"
    assert_provider_matches_database(database_url)
