"""Cost recommendations through GET /api/account/recommendations and the MCP tool: real servers made through the API
(the simulator), recorded hours of usage put in their history, stops and snapshots dated back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from mcp import Client
from mcp.server.mcpserver import Context
from sqlalchemy import insert, update

from cloudplane.db.tables import Event, ServerSample, Snapshot, utcnow
from cloudplane.mcp.server import Caller, build_server
from cloudplane.services.billing import STATE_EVENTS
from cloudplane.services.metrics import HOUR_S
from cloudplane.services.recommendations import Hour
from tests.conftest import Tenant, eventually
from tests.unit.test_recommendation_rules import idle_history, quiet_but_small, spiky

URL = "/api/account/recommendations"


def record_hours(core: Any, server_id: int, hours: Sequence[Hour]) -> None:
    """The server's hourly history: these hours, the last one ending two hours ago (clear of any roll-up the
    service itself may write for the hour just ended)."""
    last = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    rows = [
        {
            "server_id": server_id,
            "resolution_s": HOUR_S,
            "at": last - timedelta(hours=len(hours) - 1 - i),
            "cpu_percent": h.cpu_percent,
            "memory_used_mb": h.memory_used_mb,
            "disk_used_mb": h.disk_used_mb,
            "net_in_bytes": h.network_bytes // 2,
            "net_out_bytes": h.network_bytes - h.network_bytes // 2,
            "net_rx_total": 0,
            "net_tx_total": 0,
            "uptime_s": 3600,
        }
        for i, h in enumerate(hours)
    ]
    with core.db.write() as s:
        s.execute(insert(ServerSample), rows)


async def stop(client: Any, tenant: Tenant, server_id: int) -> None:
    r = await client.post(f"/api/servers/{server_id}/stop", headers=tenant.headers)
    assert r.status_code == 200, r.text

    async def get() -> dict[str, Any]:
        return (await client.get(f"/api/servers/{server_id}", headers=tenant.headers)).json()

    await eventually(get, lambda s: s["status"] == "stopped" and s["task_state"] is None)


def date_back(core: Any, server_id: int, days: int) -> None:
    """The server's power changes as if they happened `days` ago."""
    with core.db.write() as s:
        s.execute(
            update(Event)
            .where(Event.target_type == "server", Event.target_id == str(server_id), Event.type.in_(STATE_EVENTS))
            .values(created_at=utcnow() - timedelta(days=days))
        )


async def holdings(client: Any, core: Any, tenant: Tenant, create_running_server: Any) -> dict[str, int]:
    """An idle basic-1gb, a quiet performance-8gb, a spiky performance-8gb, a new server with two days of
    history, a server stopped ten days ago with a 40-day-old snapshot."""
    made = {}
    for name, plan in (("idle", "basic-1gb"), ("quiet", "performance-8gb"), ("spiky", "performance-8gb")):
        made[name] = (await create_running_server(tenant, label=name, plan_slug=plan))["id"]
    made["new"] = (await create_running_server(tenant, label="new"))["id"]
    made["parked"] = (await create_running_server(tenant, label="parked", plan_slug="standard-2gb"))["id"]
    record_hours(core, made["idle"], idle_history())
    record_hours(core, made["quiet"], quiet_but_small())
    record_hours(core, made["spiky"], spiky())
    record_hours(core, made["new"], idle_history()[:48])
    await stop(client, tenant, made["parked"])
    snap = await client.post(f"/api/servers/{made['parked']}/snapshots", json={"label": "old"}, headers=tenant.headers)
    assert snap.status_code in (201, 202), snap.text
    made["snapshot"] = snap.json()["id"]
    url = f"/api/servers/{made['parked']}/snapshots/{made['snapshot']}"

    async def get(path: str) -> Any:
        return (await client.get(path, headers=tenant.headers)).json()

    await eventually(lambda: get(url), lambda s: s["status"] == "available")
    await eventually(lambda: get(f"/api/servers/{made['parked']}"), lambda s: s["task_state"] is None)
    date_back(core, made["parked"], 10)
    with core.db.write() as s:
        s.execute(
            update(Snapshot)
            .where(Snapshot.id == made["snapshot"])
            .values(created_at=utcnow() - timedelta(days=40), size_gb=12)
        )
    return made


def kinds(reply: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(r["kind"], r["resource_id"], r["monthly_saving"]) for r in reply["recommendations"]]


async def test_recommendations_read_the_history_and_prices(client, core, make_tenant, create_running_server) -> None:
    owner = make_tenant()
    ids = await holdings(client, core, owner, create_running_server)

    r = await client.get(URL, headers=owner.headers)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["days"] == 14 and reply["currency"] == "USD"
    assert kinds(reply) == [
        # performance-8gb ($48) to the seeded catalog's cheapest plan that holds 1.2 GB of peak memory (+20%),
        # 15% CPU of 4 vCPU and 6 GB on disk: CloudVPS's starter ($9.99; 1 vCPU, 2 GB, 20 GB).
        ("oversized_plan", ids["quiet"], "38.01"),
        # standard-2gb stopped ten days: its 60 GB disk at $0.10.
        ("stopped_server_disk", ids["parked"], "6.00"),
        # basic-1gb ($5) idle: stopping it leaves its 25 GB disk ($2.50).
        ("idle_server", ids["idle"], "2.50"),
        ("old_snapshot", ids["snapshot"], "0.00"),
    ]
    assert reply["total_monthly_saving"] == "46.51"
    oversized, parked, idle, snapshot = reply["recommendations"]
    assert oversized["evidence"]["suggested_plan"] == "starter"
    assert oversized["evidence"]["memory_peak_mb"] == 1200 and 330 <= oversized["evidence"]["hours_of_samples"] <= 336
    assert oversized["action"]["body"]["plan_slug"] == "starter"
    assert oversized["action"]["body"]["location_slug"] == "nyc1"
    assert parked["action"]["request"] == f"DELETE /api/servers/{ids['parked']}"
    assert 9.9 < parked["evidence"]["days_stopped"] < 10.1
    assert idle["action"]["request"] == f"POST /api/servers/{ids['idle']}/stop"
    assert idle["evidence"]["cpu_p95_percent"] < 5 and idle["confidence"] == "high"
    assert snapshot["evidence"]["size_gb"] == 12 and snapshot["evidence"]["server_id"] == ids["parked"]
    assert snapshot["action"]["request"] == f"DELETE /api/servers/{ids['parked']}/snapshots/{ids['snapshot']}"
    # The spiky server is judged and left alone; the new one is named in a note, not guessed about.
    assert all(r["resource_id"] != ids["spiky"] for r in reply["recommendations"])
    assert reply["notes"] == [
        f"server {ids['new']} (new): 48 hours of usage recorded in the window, 72 needed before judging it"
    ]

    # A shorter window reads less: a week of the idle server's ten days is still enough to judge it, three days
    # (less the hours not rolled up yet) are not.
    week = (await client.get(URL, params={"days": 7}, headers=owner.headers)).json()
    assert ("idle_server", ids["idle"], "2.50") in kinds(week) and week["start"] > reply["start"]
    three = (await client.get(URL, params={"days": 3}, headers=owner.headers)).json()
    assert kinds(three) == [("stopped_server_disk", ids["parked"], "6.00"), ("old_snapshot", ids["snapshot"], "0.00")]
    assert any(note.startswith(f"server {ids['idle']} (idle): 6") for note in three["notes"])


async def test_another_accounts_resources_never_appear(client, core, make_tenant, create_running_server) -> None:
    owner, intruder = make_tenant(), make_tenant()
    await holdings(client, core, owner, create_running_server)
    theirs = (await client.get(URL, headers=intruder.headers)).json()
    assert theirs["recommendations"] == [] and theirs["notes"] == [] and theirs["total_monthly_saving"] == "0.00"
    # The intruder's own idle server is all it sees.
    mine = (await create_running_server(intruder, label="mine"))["id"]
    record_hours(core, mine, idle_history())
    theirs = (await client.get(URL, headers=intruder.headers)).json()
    assert kinds(theirs) == [("idle_server", mine, "2.50")]


async def test_bad_windows_are_422_naming_the_field_and_anonymous_is_401(client, tenant) -> None:
    for days in ("0", "91", "x", "²"):
        r = await client.get(URL, params={"days": days}, headers=tenant.headers)
        assert r.status_code == 422, (days, r.text)
        assert r.json()["code"] == "VALIDATION_ERROR" and "days" in r.text
    assert (await client.get(URL, params={"days": 90}, headers=tenant.headers)).json()["notes"] == [
        "usage is kept hour by hour for 31 days: older days have none to read"
    ]
    assert (await client.get(URL)).status_code == 401


async def test_the_mcp_tool_returns_what_the_route_does(client, core, make_tenant, create_running_server) -> None:
    owner = make_tenant()
    ids = await holdings(client, core, owner, create_running_server)

    async def identify(ctx: Context) -> Caller:
        return Caller(core, owner.principal)

    async with Client(build_server(identify)) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
        tool = tools["get_recommendations"]
        assert tool.annotations is not None and tool.annotations.read_only_hint
        assert tool.input_schema["properties"]["days"]["maximum"] == 90
        result = await mcp.call_tool("get_recommendations", {"days": 14})
        assert not result.is_error, result
        via_mcp = result.structured_content
        refused = await mcp.call_tool("get_recommendations", {"days": 91})
        assert refused.is_error
    assert via_mcp is not None
    via_http = (await client.get(URL, headers=owner.headers)).json()
    assert via_mcp["recommendations"] == via_http["recommendations"]
    assert via_mcp["notes"] == via_http["notes"] and via_mcp["total_monthly_saving"] == "46.51"
    assert via_mcp["recommendations"][0]["resource_id"] == ids["quiet"]
