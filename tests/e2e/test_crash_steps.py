"""Kill the real service inside each step of create, delete, snapshot, restore, rebuild, attach_ip and reset_password, at
the worst moment (the
provider call returned and its result is not recorded yet, or the rows committed), restart it without the
hook, and check that the action finishes: the server reaches its intended state, the operation reads
`succeeded`, the provider holds exactly what the database says (no doubled or orphaned machine or snapshot) and
no operation is left unfinished.

Each case starts its service with `CLOUDPLANE_CRASH_AT=<kind>:<step>` already set: the servers the case needs are
made first by operations of other kinds, which the hook does not touch, so the case needs one start with the hook
and one restart without it.
"""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from cloudplane.db.tables import Operation, Server
from tests.e2e.conftest import ServiceProcess, assert_provider_matches_database

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

BODY = {"label": "crash-step", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}
SETTINGS = {
    "simulator_time_scale": "0.1",  # a create takes ~0.6 s, a stop ~0.2 s, a snapshot ~0.2 s
    "rate_limits_enabled": "false",
    # The reconciler would mend some drift by itself; the workflows must not need it.
    "reconcile_interval_s": "0",
    "dispatch_interval_s": "0.5",
}
TIMEOUT_S = 30.0


def wait_until(what: str, check: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what}: not after {timeout}s (last seen {last!r})")


def server(client: httpx.Client, server_id: int) -> dict[str, Any]:
    r = client.get(f"/api/servers/{server_id}")
    if r.status_code == 404:
        return {"status": "gone", "task_state": None}
    assert r.status_code == 200, r.text
    return r.json()


def settled_in(client: httpx.Client, server_id: int, status: str) -> dict[str, Any] | None:
    seen = server(client, server_id)
    return seen if seen["status"] == status and seen["task_state"] is None else None


def make_running_server(client: httpx.Client) -> int:
    r = client.post("/api/servers", json=BODY)
    assert r.status_code == 201, r.text
    server_id: int = r.json()["id"]
    wait_until(f"server {server_id} running", lambda: settled_in(client, server_id, "running"))
    return server_id


def make_snapshot(client: httpx.Client, server_id: int) -> int:
    r = client.post(f"/api/servers/{server_id}/snapshots", json={"label": "before"})
    assert r.status_code == 201, r.text
    snap_id: int = r.json()["id"]
    wait_until(
        f"snapshot {snap_id} available",
        lambda: client.get(f"/api/servers/{server_id}/snapshots/{snap_id}").json()["status"] == "available",
    )
    wait_until(f"server {server_id} free", lambda: server(client, server_id)["task_state"] is None)
    return snap_id


@dataclass
class Case:
    """What a case made before the action, so the checks after the restart know what to look at."""

    server_id: int | None = None
    snapshot_id: int | None = None


def prepare(kind: str, client: httpx.Client) -> Case:
    if kind == "create":
        return Case()
    case = Case(server_id=make_running_server(client))
    if kind == "restore":
        assert client.post(f"/api/servers/{case.server_id}/stop").status_code == 200
        wait_until("server stopped", lambda: settled_in(client, case.server_id, "stopped"))  # type: ignore[arg-type]
        case.snapshot_id = make_snapshot(client, case.server_id)
    return case


def act(kind: str, client: httpx.Client, case: Case) -> httpx.Response | None:
    """Ask for the action; None when the process died before it could answer (the workflow starts, and may reach
    the hook, before the reply is sent)."""
    requests = {
        "create": ("POST", "/api/servers", BODY),
        "delete": ("DELETE", f"/api/servers/{case.server_id}", None),
        "snapshot": ("POST", f"/api/servers/{case.server_id}/snapshots", {"label": "crashing"}),
        "restore": ("POST", f"/api/servers/{case.server_id}/snapshots/{case.snapshot_id}/restore", None),
        "rebuild": ("POST", f"/api/v1/vps/vps-{case.server_id}/rebuild", {"operating_system": "debian-12"}),
        "attach_ip": ("POST", f"/api/v1/vps/vps-{case.server_id}/network/ip", None),
        # The native LetsCloud route: the key in api-token, no Authorization.
        "reset_password": ("PUT", f"/api/instances/{case.server_id}/reset-password", {"password": NEW_PASSWORD}),
    }
    method, path, body = requests[kind]
    request = client.build_request(method, path, json=body)
    if kind == "reset_password":
        request.headers["api-token"] = request.headers.pop("authorization").removeprefix("Bearer ")
    try:
        r = client.send(request)
    except httpx.TransportError:
        return None
    assert r.status_code in (200, 201, 204), r.text
    return r


def the_operation(database_url: str, kind: str) -> tuple[str, int | None]:
    """The one operation of this kind the action made (a retry must not have made another) and its server."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Operation.id, Operation.server_id).where(Operation.kind == kind)).all()
            server_ids = conn.scalars(select(Server.id)).all()
    finally:
        engine.dispose()
    assert len(rows) == 1, f"expected one {kind} operation, found {rows}"
    assert len(server_ids) == 1 and rows[0].server_id == server_ids[0], (rows, server_ids)
    return rows[0].id, rows[0].server_id


def finished(client: httpx.Client, op_id: str) -> dict[str, Any] | None:
    r = client.get(f"/api/v1/operations/{op_id}")
    assert r.status_code == 200, r.text
    op: dict[str, Any] = r.json()["data"]
    return op if op["status"] in ("succeeded", "failed") else None


# Every provider call of each kind's workflow on its way to success, and the first database step (marking the
# operation running), which steps.update_rows offers as `update_rows`.
STEPS = [
    ("create", "create"),
    ("create", "get"),
    ("create", "update_rows"),
    ("delete", "delete"),
    ("delete", "update_rows"),
    ("snapshot", "snapshot"),
    ("snapshot", "update_rows"),
    ("restore", "restore"),
    ("restore", "get"),
    ("restore", "update_rows"),
    # A running server's rebuild: stopped, re-imaged, started again. Killed once it was started again, the run that
    # resumes it only starts it: the disk is never re-imaged a second time (its generation says how often it was).
    ("rebuild", "stop"),
    ("rebuild", "rebuild"),
    ("rebuild", "start"),
    ("rebuild", "update_rows"),
    # An extra address: given to the machine again by the run that resumes it (the provider call is idempotent).
    ("attach_ip", "add_address"),
    ("attach_ip", "update_rows"),
    # The root password: set again by the run that resumes it (the same hash: nothing changes).
    ("reset_password", "set_root_password"),
    ("reset_password", "update_rows"),
]
NEW_PASSWORD = "crash-proof-pw"
# How many times each case re-images the disk: a kill between the re-imaging and its record repeats it (harmless:
# the machine is still stopped), a kill after that never does.
REBUILDS = {"stop": 1, "rebuild": 2, "start": 1, "update_rows": 1}


@pytest.mark.parametrize(("kind", "step"), STEPS, ids=[f"{k}:{s}" for k, s in STEPS])
def test_crash_inside_step_then_restart_finishes_the_action(
    service_factory: Callable[..., ServiceProcess], kind: str, step: str
) -> None:
    crash_at = f"{kind}:{step}"
    service = service_factory(**SETTINGS, test_hooks="1", crash_at=crash_at)
    service.start()
    assert service.api_key, "first start must print a bootstrap key"
    database_url = service.env["CLOUDPLANE_DATABASE_URL"]
    headers = {"Authorization": f"Bearer {service.api_key}"}

    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        case = prepare(kind, client)
        reply = act(kind, client, case)

    assert service.proc is not None
    try:
        returncode = service.proc.wait(TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - say which hook did not fire
        raise AssertionError(f"the process did not die at {crash_at}:\n" + "".join(service.output[-30:])) from error
    assert returncode == -signal.SIGKILL, returncode
    assert any(f"CLOUDPLANE_CRASH_AT={crash_at} reached" in line for line in service.output), "died elsewhere"

    op_id, server_id = the_operation(database_url, kind)
    # CloudVPS's replies name it in their body; the native envelope has no place for it.
    if reply is not None and kind not in ("rebuild", "attach_ip", "reset_password"):
        assert reply.headers["Operation-Location"] == f"/api/operations/{op_id}"
    if kind == "create":
        assert reply is None or reply.json()["id"] == server_id
        case.server_id = server_id
    assert case.server_id is not None

    service.env.pop("CLOUDPLANE_CRASH_AT")
    service.env.pop("CLOUDPLANE_TEST_HOOKS")
    service.start()
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        op = wait_until(f"operation {op_id} ({crash_at}) finished", lambda: finished(client, op_id))
        assert op["status"] == "succeeded", op
        assert client.get(f"/api/operations/{op_id}").json()["status"] == "succeeded"
        final = server(client, case.server_id)
        if kind == "create":
            assert final["status"] == "running" and final["task_state"] is None, final
            assert final["ip_address"], final
        elif kind == "delete":
            assert final["status"] == "gone", final
        elif kind == "snapshot":
            assert final["status"] == "running" and final["task_state"] is None, final
            snaps = client.get(f"/api/servers/{case.server_id}/snapshots").json()["snapshots"]
            assert [s["status"] for s in snaps] == ["available"], snaps
        elif kind == "rebuild":
            assert final["status"] == "running" and final["task_state"] is None, final
            assert final["image"]["slug"] == "debian-12", final
        elif kind == "attach_ip":
            network = client.get(f"/api/v1/vps/vps-{case.server_id}/network").json()["data"]
            given = network["ip_addresses"]["extra"]
            assert len(given) == 1 and (reply is None or reply.json()["data"]["ip_address"] == given[0]), network
        elif kind == "reset_password":
            assert final["status"] == "running" and final["task_state"] is None, final
        else:
            assert final["status"] == "stopped" and final["task_state"] is None, final
            snap = client.get(f"/api/servers/{case.server_id}/snapshots/{case.snapshot_id}").json()
            assert snap["status"] == "available", snap
    service.stop()

    assert_provider_matches_database(database_url)
    if kind == "rebuild":
        assert disk_of(database_url, case.server_id) == ("debian-12", REBUILDS[step])
    if kind == "attach_ip":
        assert machine_addresses(database_url, case.server_id) == given
    if kind == "reset_password":
        password_hash = machine_password_hash(database_url, case.server_id)
        assert password_hash is not None and crypt.crypt(NEW_PASSWORD, password_hash) == password_hash


def _simulated_machine(database_url: str, server_id: int) -> tuple[Any, int]:
    """The simulator's store and the id there of the server's machine."""
    from cloudplane.config import Settings

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            ref = conn.scalar(select(Server.provider_ref).where(Server.id == server_id))
    finally:
        engine.dispose()
    assert ref is not None
    return create_engine(Settings(database_url=database_url).simulator_database_url), int(ref.removeprefix("sim-"))


def machine_addresses(database_url: str, server_id: int) -> list[str]:
    """The extra addresses the server's simulated machine was given."""
    from cloudplane.providers.simulator import sim_addresses

    engine, machine_id = _simulated_machine(database_url, server_id)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(sim_addresses.c.address).where(sim_addresses.c.machine_id == machine_id)))
    finally:
        engine.dispose()


def machine_password_hash(database_url: str, server_id: int) -> str | None:
    """The root password hash the server's simulated machine was given."""
    from cloudplane.providers.simulator import sim_passwords

    engine, machine_id = _simulated_machine(database_url, server_id)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(sim_passwords.c.password_hash).where(sim_passwords.c.machine_id == machine_id))
    finally:
        engine.dispose()


def disk_of(database_url: str, server_id: int) -> tuple[str, int]:
    """The image and disk generation of the server's simulated machine."""
    from cloudplane.providers.simulator import sim_machines

    engine, machine_id = _simulated_machine(database_url, server_id)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                select(sim_machines.c.image, sim_machines.c.disk_generation).where(sim_machines.c.id == machine_id)
            ).one()
    finally:
        engine.dispose()
    return row.image, row.disk_generation
