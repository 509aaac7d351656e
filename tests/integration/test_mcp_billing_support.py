"""The MCP tools for billing and support answer what the CloudVPS routes do, for the caller's own account only
(the MCP server in-process, through the SDK's own client)."""

from __future__ import annotations

from mcp.client import Client
from mcp.server.mcpserver import Context

from cloudplane.mcp.server import Caller, build_server
from tests.integration.test_billing import seed_invoice

V1 = "/api/v1"


def mcp_as(core, tenant) -> Client:
    async def identify(ctx: Context) -> Caller:
        return Caller(core, tenant.principal)

    return Client(build_server(identify))


async def test_usage_and_invoices_are_the_routes_own(client, core, make_tenant, create_running_server) -> None:
    owner, other = make_tenant(), make_tenant()
    server = await create_running_server(owner)
    invoice = seed_invoice(core, owner.principal.account_id, server["id"])
    async with mcp_as(core, owner) as mcp:
        usage = await mcp.call_tool("get_usage", {})
        listed = await mcp.call_tool("list_invoices", {})
        one = await mcp.call_tool("get_invoice", {"invoice_id": f"inv-{invoice}"})
    assert not (usage.is_error or listed.is_error or one.is_error), (usage, listed, one)
    via_http = (await client.get(f"{V1}/billing/invoices/inv-{invoice}", headers=owner.headers)).json()["data"]
    assert one.structured_content == via_http
    assert [i["id"] for i in listed.structured_content["invoices"]] == [f"inv-{invoice}"]
    usage_http = (await client.get(f"{V1}/billing/usage", headers=owner.headers)).json()
    assert usage.structured_content["estimated_cost"] == usage_http["estimated_cost"]
    assert usage.structured_content["current_period"] == usage_http["data"]["current_period"]
    async with mcp_as(core, other) as mcp:
        theirs = await mcp.call_tool("get_invoice", {"invoice_id": f"inv-{invoice}"})
        none = await mcp.call_tool("list_invoices", {})
    assert theirs.is_error and "NOT_FOUND" in theirs.content[0].text
    assert none.structured_content["invoices"] == []


async def test_a_ticket_opened_and_answered_over_mcp_is_the_routes_own(client, core, make_tenant) -> None:
    owner, other = make_tenant(), make_tenant()
    async with mcp_as(core, owner) as mcp:
        opened = await mcp.call_tool(
            "open_ticket", {"subject": "Disk full", "description": "My server's disk is full", "priority": "high"}
        )
        assert not opened.is_error, opened
        ticket = opened.structured_content["id"]
        replied = await mcp.call_tool("reply_to_ticket", {"ticket_id": ticket, "message": "Any news?"})
        assert not replied.is_error, replied
        listed = await mcp.call_tool("list_tickets", {"status": "open"})
        shown = await mcp.call_tool("get_ticket", {"ticket_id": ticket})
    assert [t["id"] for t in listed.structured_content["tickets"]] == [ticket]
    via_http = (await client.get(f"{V1}/support/tickets/{ticket}", headers=owner.headers)).json()["data"]
    assert shown.structured_content == via_http
    assert [m["message"] for m in via_http["messages"]] == ["My server's disk is full", "Any news?"]
    assert via_http["priority"] == "high"
    async with mcp_as(core, other) as mcp:
        theirs = await mcp.call_tool("get_ticket", {"ticket_id": ticket})
        written = await mcp.call_tool("reply_to_ticket", {"ticket_id": ticket, "message": "me too"})
    assert theirs.is_error and written.is_error
    after = (await client.get(f"{V1}/support/tickets/{ticket}", headers=owner.headers)).json()["data"]
    assert len(after["messages"]) == 2
