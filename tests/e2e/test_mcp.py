"""The MCP server through the `mcp` SDK's own client, over both transports against real processes: stdio (`cloudplane
mcp` spawned with an API key in its environment) and streamable HTTP (`/mcp` of `cloudplane serve`, bearer)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from tests.conftest import scratch_database
from tests.e2e.conftest import ServiceProcess
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

SERVER = {"label": "mcp web", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}
DESTRUCTIVE = {
    "stop_server",
    "reboot_server",
    "delete_server",
    "rebuild_server",
    "restore_snapshot",
    "delete_snapshot",
    "delete_ssh_key",
    "release_gpu_instance",
    "delete_app",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service for the module (each test makes accounts of its own)."""
    workdir = tmp_path_factory.mktemp("mcp")
    with scratch_database(workdir, "mcp") as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPLANE_")}
        # Slow enough that a create runs for a moment (progress to report), fast enough for a test.
        env.update(CLOUDPLANE_DATABASE_URL=database_url, CLOUDPLANE_SIMULATOR_TIME_SCALE="0.02")
        service = ServiceProcess(workdir, env)
        service.start()
        try:
            yield service
        finally:
            service.stop()


_accounts = itertools.count()


def new_api_key(service: ServiceProcess, name: str) -> str:
    email = f"{name}-{next(_accounts)}@example.com"
    made = subprocess.run(
        [sys.executable, "-m", "cloudplane", "admin", "create-user", "--email", email, "--json"],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(made.stdout)["api_key"]


Connect = Callable[..., Any]


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest, service: ServiceProcess) -> Connect:
    """Open an SDK client for an API key over the transport under test."""

    @asynccontextmanager
    async def open_client(api_key: str, **options: Any) -> AsyncIterator[Client]:
        if request.param == "stdio":
            params = StdioServerParameters(
                command=sys.executable,
                args=["-m", "cloudplane", "mcp"],
                env={**service.env, "CLOUDPLANE_API_KEY": api_key},
                cwd=str(service.workdir),
            )
            async with Client(params, **options) as client:
                yield client
        else:
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {api_key}"})
            async with (
                http,
                Client(streamable_http_client(service.url + "/mcp", http_client=http), **options) as client,
            ):
                yield client

    return open_client


def answering(action: str, confirm: bool = True) -> Any:
    asked: list[str] = []

    async def elicitation(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action=action, content={"confirm": confirm} if action == "accept" else None)

    elicitation.asked = asked  # type: ignore[attr-defined]
    return elicitation


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result
    return " ".join(getattr(block, "text", "") for block in result.content)


async def create_and_wait(client: Client) -> tuple[dict[str, Any], list[tuple[float, float | None, str | None]]]:
    created = await client.call_tool("create_server", SERVER)
    assert not created.is_error, created
    server = created.structured_content
    assert server is not None and server["operation_id"] and server["root_password"]
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    waited = await client.call_tool(
        "wait_for_operation",
        {"operation_id": server["operation_id"], "timeout_seconds": 60},
        progress_callback=on_progress,
    )
    assert not waited.is_error, waited
    assert waited.structured_content is not None
    assert waited.structured_content["finished"] is True
    assert waited.structured_content["operation"]["status"] == "succeeded"
    assert waited.structured_content["operation"]["target"] == {"type": "server", "id": server["id"]}
    return server, progress


async def test_tools_create_wait_and_confirmed_delete(connect: Connect, service: ServiceProcess) -> None:
    key = new_api_key(service, "owner")
    async with connect(key) as client:
        assert "Always confirm destructive operations" in (client.instructions or "")
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"list_servers", "create_server", "wait_for_operation", "delete_server", "list_plans"} <= set(tools)
        for tool in tools.values():
            assert tool.input_schema["type"] == "object", tool.name
            assert tool.output_schema is not None, tool.name
        for name in DESTRUCTIVE:
            assert "confirm" in tools[name].input_schema["properties"], name
            assert tools[name].annotations is not None and tools[name].annotations.destructive_hint, name

        server, progress = await create_and_wait(client)
        assert progress, "no progress notification while waiting"
        assert progress[-1][0] == 100 and progress[-1][1] == 100
        assert [p for p, _, _ in progress] == sorted(p for p, _, _ in progress)
        shown = (await client.call_tool("get_server", {"server_id": server["id"]})).structured_content
        assert shown is not None and shown["status"] == "running" and shown["ip_address"]

        refused = await client.call_tool("delete_server", {"server_id": server["id"]})
        assert "CONFIRMATION_REQUIRED" in error_text(refused) and "confirm: true" in error_text(refused)
        still = (await client.call_tool("get_server", {"server_id": server["id"]})).structured_content
        assert still is not None and still["status"] == "running" and still["task_state"] is None

        deleted = await client.call_tool("delete_server", {"server_id": server["id"], "confirm": True})
        assert not deleted.is_error, deleted
        assert deleted.structured_content is not None
        operation_id = deleted.structured_content["operation_id"]
        waited = await client.call_tool("wait_for_operation", {"operation_id": operation_id, "timeout_seconds": 60})
        assert waited.structured_content is not None
        assert waited.structured_content["operation"]["status"] == "succeeded"
        gone = await client.call_tool("get_server", {"server_id": server["id"]})
        assert "NOT_FOUND" in error_text(gone)
        assert gone.structured_content == {
            "error": "Server not found",
            "code": "NOT_FOUND",
            "details": {"server_id": server["id"]},
        }


# The protocol's two ways of asking: inside the tool call's result (2026-07-28 on, the SDK's default), and a request
# from server to client in the middle of the call (the handshake era's, which most clients still speak).
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_elicitation_declined_then_accepted(connect: Connect, service: ServiceProcess, mode: str) -> None:
    key = new_api_key(service, "asker")
    decline = answering("decline")
    async with connect(key, elicitation_callback=decline, mode=mode) as client:
        assert (client.protocol_version >= "2026-07-28") == (mode == "auto")
        server, _ = await create_and_wait(client)
        # The client can ask its user, so the user is asked even when the model says confirm: true.
        refused = await client.call_tool("delete_server", {"server_id": server["id"], "confirm": True})
        assert "CANCELLED" in error_text(refused)
        assert decline.asked and str(server["id"]) in decline.asked[0]
        still = (await client.call_tool("get_server", {"server_id": server["id"]})).structured_content
        assert still is not None and still["status"] == "running" and still["task_state"] is None

    accept = answering("accept")
    async with connect(key, elicitation_callback=accept, mode=mode) as client:
        deleted = await client.call_tool("delete_server", {"server_id": server["id"]})
        assert not deleted.is_error, deleted
        assert accept.asked and str(server["id"]) in accept.asked[0]
        assert deleted.structured_content is not None and deleted.structured_content["task_state"] == "deleting"


async def test_another_tenants_server_stays_invisible(connect: Connect, service: ServiceProcess) -> None:
    owner, intruder = new_api_key(service, "owner"), new_api_key(service, "intruder")
    async with connect(owner) as client:
        server, _ = await create_and_wait(client)
        app = await client.call_tool("create_app", {"app": {"name": "shop", "github_repo": "https://github.com/a/b"}})
        assert not app.is_error, app
        assert app.structured_content is not None
        app_id = app.structured_content["id"]
    async with connect(intruder) as client:
        listed = (await client.call_tool("list_servers", {})).structured_content
        assert listed is not None and listed["servers"] == [] and listed["total"] == 0
        for name, arguments in [
            ("get_server", {"server_id": server["id"]}),
            ("delete_server", {"server_id": server["id"], "confirm": True}),
            ("stop_server", {"server_id": server["id"], "confirm": True}),
            ("create_snapshot", {"server_id": server["id"], "label": "theirs"}),
            ("list_snapshots", {"server_id": server["id"]}),
            ("get_operation", {"operation_id": server["operation_id"]}),
            ("wait_for_operation", {"operation_id": server["operation_id"]}),
            ("get_app", {"app_id": app_id}),
            ("delete_app", {"app_id": app_id, "confirm": True}),
        ]:
            result = await client.call_tool(name, arguments)
            assert "NOT_FOUND" in error_text(result), (name, result)
    async with connect(owner) as client:
        shown = (await client.call_tool("get_server", {"server_id": server["id"]})).structured_content
        assert shown is not None and shown["status"] == "running" and shown["task_state"] is None
        assert shown["snapshots"] == []
        apps = (await client.call_tool("list_apps", {})).structured_content
        assert apps is not None and [a["id"] for a in apps["items"]] == [app_id]


async def call(client: Client, name: str, **arguments: Any) -> Any:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, (name, result)
    return result.structured_content


@pytest.mark.parametrize("connect", ["http"], indirect=True)
async def test_the_other_use_cases(connect: Connect, service: ServiceProcess) -> None:
    """Catalog, account and costs, SSH keys, snapshots and restore, backup schedules and GPU instances, once each."""
    async with connect(new_api_key(service, "user")) as client:
        plans = await call(client, "list_plans")
        assert "basic-1gb" in [p["slug"] for p in plans["plans"]]
        assert "ubuntu-22-04" in [i["slug"] for i in (await call(client, "list_images"))["images"]]
        assert "nyc1" in [loc["slug"] for loc in (await call(client, "list_locations"))["locations"]]
        account = await call(client, "get_account_info")
        assert account["email"].startswith("user-") and account["currency"]

        key = await call(client, "create_ssh_key", title="laptop", public_key=ed25519_public_key())
        assert [k["id"] for k in (await call(client, "list_ssh_keys"))["ssh_keys"]] == [key["id"]]
        server, _ = await create_and_wait(client)
        costs = await call(client, "get_costs")
        plan_price = next(p["price"] for p in plans["plans"] if p["slug"] == "basic-1gb")
        assert costs["monthly_total"] == plan_price and [s["id"] for s in costs["servers"]] == [server["id"]]

        snap = await call(client, "create_snapshot", server_id=server["id"], label="before upgrade")
        for _ in range(600):
            shown = await call(client, "get_snapshot", server_id=server["id"], snapshot_id=snap["id"])
            if shown["status"] == "available":
                break
            await anyio.sleep(0.1)
        assert shown["status"] == "available"
        refused = await client.call_tool("restore_snapshot", {"server_id": server["id"], "snapshot_id": snap["id"]})
        assert "CONFIRMATION_REQUIRED" in error_text(refused)
        # A running server is not restored: the domain's refusal, with its code and details.
        running = await client.call_tool(
            "restore_snapshot", {"server_id": server["id"], "snapshot_id": snap["id"], "confirm": True}
        )
        assert running.is_error and running.structured_content is not None
        assert running.structured_content["code"] == "INVALID_STATE"
        stopped = await call(client, "stop_server", server_id=server["id"], confirm=True)
        await call(client, "wait_for_operation", operation_id=stopped["operation_id"], timeout_seconds=60)
        restored = await call(client, "restore_snapshot", server_id=server["id"], snapshot_id=snap["id"], confirm=True)
        waited = await call(client, "wait_for_operation", operation_id=restored["operation_id"], timeout_seconds=60)
        assert waited["operation"]["status"] == "succeeded" and waited["operation"]["kind"] == "restore"
        schedule = await call(client, "set_backup_schedule", server_id=server["id"], enabled=True, hour=4)
        assert schedule == {"server_id": server["id"], "enabled": True, "hour": 4, "keep": 7}
        assert await call(client, "get_backup_schedule", server_id=server["id"]) == schedule
        listed = await call(client, "list_operations")
        assert [op["kind"] for op in listed["operations"]] == ["restore", "stop", "snapshot", "create"]
        # Snapshots and restores act on (and name) the snapshot; the server's own are its create and stop.
        listed = await call(client, "list_operations", server_id=server["id"])
        assert [op["kind"] for op in listed["operations"]] == ["stop", "create"]

        offers = (await call(client, "search_gpu_offers", gpu_model="RTX 4090", max_price_per_hour=2.0))["offers"]
        assert offers and all(o["gpu_model"] == "RTX 4090" and o["price_per_hour"] <= 2.0 for o in offers)
        rented = await call(
            client,
            "rent_gpu_instance",
            provider=offers[0]["provider"],
            offer_id=offers[0]["offer_id"],
            image="pytorch/pytorch:latest",
            label="training",
        )
        waited = await call(client, "wait_for_operation", operation_id=rented["operation_id"], timeout_seconds=60)
        assert waited["operation"]["status"] == "succeeded"
        assert [i["id"] for i in (await call(client, "list_gpu_instances"))["servers"]] == [rented["id"]]
        # A catalog server is not a GPU instance: releasing it is refused, and it stays.
        refused = await client.call_tool("release_gpu_instance", {"instance_id": server["id"], "confirm": True})
        assert "NOT_FOUND" in error_text(refused)
        released = await call(client, "release_gpu_instance", instance_id=rented["id"], confirm=True)
        assert released["task_state"] == "deleting"


@pytest.mark.parametrize("authorization", [None, "Bearer cp_not-a-key", "Basic dXNlcjpwYXNz"])
def test_http_refuses_a_missing_or_bad_bearer(service: ServiceProcess, authorization: str | None) -> None:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    r = httpx.post(service.url + "/mcp", json=body, headers=headers, timeout=10)
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_http_session_is_its_accounts_own(service: ServiceProcess) -> None:
    """A session opened with one account's key is unknown to every other account (its elicitations go to its owner
    only), as the SDK answers an unknown session."""
    owner, intruder = new_api_key(service, "owner"), new_api_key(service, "intruder")
    version = "2025-11-25"
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    }
    opened = httpx.post(
        service.url + "/mcp", json=initialize, headers={**headers, "Authorization": f"Bearer {owner}"}, timeout=10
    )
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    in_session = {**headers, "mcp-session-id": session, "mcp-protocol-version": version}
    tools_list = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    r = httpx.post(
        service.url + "/mcp", json=tools_list, headers={**in_session, "Authorization": f"Bearer {intruder}"}, timeout=10
    )
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", r.text
    r = httpx.post(
        service.url + "/mcp", json=tools_list, headers={**in_session, "Authorization": f"Bearer {owner}"}, timeout=10
    )
    assert r.status_code == 200 and "list_servers" in r.text, r.text


def test_stdio_refuses_to_start_without_a_valid_key(service: ServiceProcess) -> None:
    for key in (None, "cp_not-a-key"):
        env = {k: v for k, v in service.env.items() if k != "CLOUDPLANE_API_KEY"}
        if key:
            env["CLOUDPLANE_API_KEY"] = key
        run = subprocess.run(
            [sys.executable, "-m", "cloudplane", "mcp"],
            env=env,
            cwd=str(service.workdir),
            input="",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2, run
        assert "CLOUDPLANE_API_KEY" in run.stderr and run.stdout == ""
