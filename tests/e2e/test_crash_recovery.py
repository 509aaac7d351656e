"""SIGKILL the real service in the middle of its workflows, restart it, and check that every server reaches its
intended state: none lost, none doubled at the provider, none stuck."""

from __future__ import annotations

import random
import time

import httpx
from sqlalchemy import create_engine, func, select

from cloudplane.config import Settings
from cloudplane.db.tables import Operation, Server, Snapshot
from cloudplane.providers.simulator import sim_machines, sim_snapshots

BODY = {"label": "crash", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}


def settle(client: httpx.Client, ids: list[int], timeout: float = 90.0) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {}
        for i in ids:
            r = client.get(f"/api/servers/{i}")
            seen[i] = r.json() if r.status_code == 200 else {"status": "gone", "task_state": None}
        if all(s["task_state"] is None and s["status"] != "starting" for s in seen.values()):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"servers still busy after {timeout}s: {seen}")


def test_sigkill_mid_workflow_then_restart_reaches_intended_states(service_factory) -> None:
    rng = random.Random(2026)
    # Creates take ~1.2 s and stops/snapshots ~0.4 s here: long enough to be killed in the middle.
    # The checks poll much faster than the free tier allows one account.
    service = service_factory(simulator_time_scale="0.2", rate_limits_enabled="false")
    service.start()
    assert service.api_key, "first start must print a bootstrap key"
    headers = {"Authorization": f"Bearer {service.api_key}"}

    expected: dict[int, str] = {}  # server id -> intended final status ("gone" for deleted)
    snapshots: list[tuple[int, int]] = []
    for round_ in range(3):
        with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
            running = [i for i, want in expected.items() if want == "running"]
            for i in running[:2]:
                if client.delete(f"/api/servers/{i}").status_code == 204:
                    expected[i] = "gone"
            for i in running[2:4]:
                r = client.post(f"/api/servers/{i}/snapshots", json={"label": f"r{round_}"})
                if r.status_code == 201:
                    snapshots.append((i, r.json()["id"]))
            for i in running[4:5]:
                if client.post(f"/api/servers/{i}/stop").status_code == 200:
                    expected[i] = "stopped"
            for n in range(6):
                r = client.post("/api/servers", json={**BODY, "label": f"crash-{round_}-{n}"})
                assert r.status_code == 201, r.text
                expected[r.json()["id"]] = "running"
        time.sleep(rng.uniform(0.05, 0.8))
        service.kill()
        service.start()
        if round_ < 2:
            with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
                settle(client, list(expected))

    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        final = settle(client, list(expected))
        for i, want in expected.items():
            assert final[i]["status"] == ("gone" if want == "gone" else want), (i, final[i])
        for server_id, snap_id in snapshots:
            if expected[server_id] == "gone":
                continue
            r = client.get(f"/api/servers/{server_id}/snapshots/{snap_id}")
            assert r.status_code == 200 and r.json()["status"] == "available", r.text
    service.stop()

    settings = Settings(database_url=service.env["CLOUDPLANE_DATABASE_URL"])
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        live = conn.scalar(select(func.count()).select_from(Server).where(Server.deleted_at.is_(None)))
        refs = conn.execute(select(Server.provider_ref).where(Server.deleted_at.is_(None))).scalars().all()
        unfinished = conn.scalar(
            select(func.count()).select_from(Operation).where(Operation.status.in_(["pending", "running"]))
        )
        live_snaps = conn.scalar(select(func.count()).select_from(Snapshot).where(Snapshot.deleted_at.is_(None)))
    engine.dispose()
    sim_engine = create_engine(settings.simulator_database_url)
    with sim_engine.connect() as conn:
        machines = conn.execute(select(sim_machines.c.token)).scalars().all()
        sim_snaps = conn.scalar(select(func.count()).select_from(sim_snapshots))
    sim_engine.dispose()
    assert len(machines) == len(set(machines)) == live, "provider inventory must equal the live servers, no doubles"
    assert None not in refs and len(set(refs)) == len(refs) == live
    assert unfinished == 0
    assert sim_snaps == live_snaps
