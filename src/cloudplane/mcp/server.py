"""The MCP tools: one per use case of the LetsCloud assistant (and the GPU, backup and operation areas), each a call
of one service as the authenticated caller, shared by the stdio and HTTP transports.

Results are the LetsCloud face's models (same ids and fields), errors the face's envelope as an `is_error` result.
Destructive tools ask the user through MCP elicitation when the client declared it, else refuse to run without
`confirm: true`; long actions return their operation, which `wait_for_operation` follows with progress
notifications.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from cloudplane import __version__, context
from cloudplane.api.cloudvps.billing import InvoiceOut, invoice_out, parse_invoice_id, usage_json
from cloudplane.api.cloudvps.support import (
    USER_BASE,
    MessageOut,
    TicketDetailOut,
    TicketOut,
    message_out,
    parse_ticket_id,
    ticket_detail_out,
    ticket_out,
)
from cloudplane.api.common.deps import MAX_ID, read, write
from cloudplane.api.common.faces import LETSCLOUD_FIELDS, face_details
from cloudplane.api.letscloud import schemas as w
from cloudplane.api.operations.routes import OperationOut, letscloud_operation
from cloudplane.api.vibecaas.apps import AppCreate, AppList, AppOut, app_list, app_out
from cloudplane.core import Core
from cloudplane.domain.errors import CloudplaneError
from cloudplane.domain.tickets import Category, Priority, TicketStatus
from cloudplane.providers.marketplace import Offer, OfferQuery
from cloudplane.services import (
    accounts,
    apps,
    backups,
    billing,
    gpu,
    mail,
    operations,
    recommendations,
    servers,
    snapshots,
    ssh_keys,
    support,
)
from cloudplane.services.accounts import Principal
from cloudplane.services.operations import OperationView

# The LetsCloud assistant's own instructions (its README's GPT "Instructions"), then how these tools work.
ASSISTANT_INSTRUCTIONS = (
    "You are a cloud infrastructure management assistant for LetsCloud platform. Help users manage their cloud "
    "resources through natural language commands. Create, start, stop servers, manage SSH keys, handle snapshots, "
    "provide plan information, and optimize costs. Always confirm destructive operations and prioritize user safety."
)
INSTRUCTIONS = (
    ASSISTANT_INSTRUCTIONS
    + "\n\nThis is Cloudplane, which serves the LetsCloud API. Look plans, images and locations up with list_plans, "
    "list_images and list_locations before creating a server, and use their slugs. Actions that take time (create, "
    "start, stop, reboot, rebuild, delete, snapshots, restores, GPU rentals) return an operation_id at once: call "
    "wait_for_operation with it to follow the action to its end. Deleting, stopping, rebooting, rebuilding, "
    "restoring and releasing ask the user to confirm: in a client that supports elicitation the user is asked "
    "directly; otherwise ask the user yourself and call again with confirm: true only after they said yes."
)

ServerId = Annotated[int, Field(ge=1, le=MAX_ID, description="The server's id, as list_servers shows it")]
SnapshotId = Annotated[int, Field(ge=1, le=MAX_ID, description="The snapshot's id, as list_snapshots shows it")]
KeyId = Annotated[int, Field(ge=1, le=MAX_ID, description="The SSH key's id, as list_ssh_keys shows it")]
Page = Annotated[int, Field(ge=1, le=1_000_000, description="Page number, from 1")]
PerPage = Annotated[int, Field(ge=1, le=100, description="Items per page (at most 100)")]
Confirm = Annotated[
    bool,
    Field(
        description="Set to true only after the user confirmed this destructive action (needed when the client "
        "cannot ask the user itself through elicitation)"
    ),
]
AppId = Annotated[str, Field(min_length=1, max_length=64, description="The app's id (a UUID), as list_apps shows it")]
OperationId = Annotated[
    str, Field(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$", description="The operation's id (a UUID)")
]
RecommendationDays = Annotated[
    int, Field(ge=1, le=recommendations.MAX_DAYS, description="How many days of usage history to read")
]
# How long wait_for_operation waits at most, and how often it reads the operation meanwhile.
MAX_WAIT_S = 1800
POLL_S = 0.25

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    core: Core
    principal: Principal


# How a transport names the caller of a tool call: stdio by the API key it was started with, HTTP by the request's
# bearer (verified before the call reached the SDK).
Identify = Callable[[Context], Awaitable[Caller]]


class Confirmation(BaseModel):
    """What the user answers when asked to confirm a destructive action."""

    confirm: bool = Field(description="Yes, do it")


class OperationList(BaseModel):
    operations: list[OperationOut]
    total: int
    page: int
    per_page: int


class OperationWait(BaseModel):
    operation: OperationOut
    finished: bool = Field(description="False when the wait timed out before the operation ended; wait again")


class ServerCost(BaseModel):
    id: int
    label: str
    status: str
    monthly: w.Money
    hourly: w.Money | None


class InvoiceList(BaseModel):
    invoices: list[InvoiceOut]
    total: int
    page: int
    per_page: int


class TicketList(BaseModel):
    tickets: list[TicketOut]
    total: int
    page: int
    per_page: int


InvoiceRef = Annotated[
    str, Field(max_length=40, description='The invoice\'s id as list_invoices shows it, e.g. "inv-3"')
]
TicketRef = Annotated[
    str, Field(max_length=40, description='The ticket\'s id as list_tickets shows it, e.g. "ticket-3"')
]
TicketText = Annotated[str, Field(min_length=1, max_length=20_000, pattern=r"\S")]


class Costs(BaseModel):
    currency: str
    monthly_total: w.Money = Field(description="What the live servers cost a month at their current prices")
    servers: list[ServerCost]


class BackupSchedule(BaseModel):
    server_id: int
    enabled: bool
    hour: int = Field(description="The hour of the day (UTC) the automatic backup is taken")
    keep: int = Field(description="How many automatic backups are kept")


class GpuOffers(BaseModel):
    offers: list[Offer] = Field(description="price_per_hour is USD for the whole offer")
    errors: dict[str, str] = Field(description="Providers whose offers are missing, and why")


class Deleted(BaseModel):
    deleted: bool = True
    id: int
    operation_id: str | None = Field(default=None, description="The operation carrying the delete out, if any")


class DeletedApp(BaseModel):
    deleted: bool = True
    id: str


def _error_result(error: CloudplaneError) -> CallToolResult:
    """A domain error as the tool's failure: the LetsCloud face's envelope, as text and as structured content."""
    body = {"error": error.message, "code": error.code, "details": face_details(error, LETSCLOUD_FIELDS)}
    return CallToolResult(
        content=[TextContent(type="text", text=f"{error.code}: {error.message} {json.dumps(body['details'])}")],
        structured_content=body,
        is_error=True,
    )


def domain_errors(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn the domain errors a tool's service call raises into the tool's error result (the SDK reads the tool's
    signature through `functools.wraps`)."""

    @functools.wraps(fn)
    async def tool(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except CloudplaneError as e:
            return _error_result(e)

    return tool


@contextmanager
def acting(caller: Caller, ctx: Context) -> Iterator[None]:
    """The call's own request context: events and operations it records name the caller (never another call's)."""
    token = context.begin(f"mcp-{ctx.request_id}-{uuid.uuid4().hex[:8]}", None)
    context.bind(actor_user_id=caller.principal.user_id)
    try:
        yield
    finally:
        context.end(token)


def can_elicit(ctx: Context) -> bool:
    """Whether the client declared form elicitation (a bare `elicitation: {}` counts, as the SDK counts it)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def ask(ctx: Context, confirm: bool, question: str) -> Elicit[Confirmation] | Confirmation:
    """The confirmation of a destructive action: the user's own answer when the client can ask them (whatever
    `confirm` says, so a model cannot answer for them), else `confirm: true`, else a refusal saying how to confirm."""
    if can_elicit(ctx):
        return Elicit(question, Confirmation)
    if confirm:
        return Confirmation(confirm=True)
    raise ToolError(
        f"CONFIRMATION_REQUIRED: {question} This cannot be undone: ask the user, and call again with "
        "confirm: true only if they agree."
    )


def confirmed(approval: ElicitationResult[Confirmation], what: str) -> None:
    if not (isinstance(approval, AcceptedElicitation) and approval.data.confirm):
        raise ToolError(f"CANCELLED: the user did not confirm; {what} was not done.")


def confirm_delete_server(server_id: int, confirm: bool, ctx: Context) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Delete server {server_id} and everything on its disk?")


def confirm_stop_server(server_id: int, confirm: bool, ctx: Context) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Stop server {server_id}? What runs on it stops.")


def confirm_reboot_server(server_id: int, confirm: bool, ctx: Context) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Reboot server {server_id}? What runs on it is interrupted.")


def confirm_rebuild_server(server_id: int, confirm: bool, ctx: Context) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Rebuild server {server_id}? Its disk is erased and re-imaged.")


def confirm_restore_snapshot(
    server_id: int, snapshot_id: int, confirm: bool, ctx: Context
) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Restore server {server_id} from snapshot {snapshot_id}? Its disk now is replaced.")


def confirm_delete_snapshot(
    server_id: int, snapshot_id: int, confirm: bool, ctx: Context
) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Delete snapshot {snapshot_id} of server {server_id}?")


def confirm_delete_ssh_key(key_id: int, confirm: bool, ctx: Context) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Delete SSH key {key_id}?")


def confirm_delete_app(app_id: str, confirm: bool, ctx: Context) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Delete app {app_id} and its deployments?")


def confirm_release_gpu_instance(instance_id: int, confirm: bool, ctx: Context) -> Elicit[Confirmation] | Confirmation:
    return ask(ctx, confirm, f"Release GPU instance {instance_id}? The machine and its data are given back.")


# The user's answer to a destructive tool's question, filled in by the SDK before the tool runs.
ApproveStopServer = Annotated[ElicitationResult[Confirmation], Resolve(confirm_stop_server)]
ApproveRebootServer = Annotated[ElicitationResult[Confirmation], Resolve(confirm_reboot_server)]
ApproveDeleteServer = Annotated[ElicitationResult[Confirmation], Resolve(confirm_delete_server)]
ApproveRebuildServer = Annotated[ElicitationResult[Confirmation], Resolve(confirm_rebuild_server)]
ApproveRestoreSnapshot = Annotated[ElicitationResult[Confirmation], Resolve(confirm_restore_snapshot)]
ApproveDeleteSnapshot = Annotated[ElicitationResult[Confirmation], Resolve(confirm_delete_snapshot)]
ApproveDeleteSshKey = Annotated[ElicitationResult[Confirmation], Resolve(confirm_delete_ssh_key)]
ApproveDeleteApp = Annotated[ElicitationResult[Confirmation], Resolve(confirm_delete_app)]
ApproveReleaseGpuInstance = Annotated[ElicitationResult[Confirmation], Resolve(confirm_release_gpu_instance)]


DESTRUCTIVE = ToolAnnotations(destructive_hint=True, read_only_hint=False)
READ_ONLY = ToolAnnotations(read_only_hint=True)
CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=False)


async def follow(caller: Caller, ctx: Context, operation_id: str, timeout_s: float) -> OperationWait:
    """Read the operation until it ends or `timeout_s` passes, reporting its progress whenever it moves."""
    core, principal = caller.core, caller.principal
    deadline = time.monotonic() + timeout_s
    reported = -1.0
    while True:
        op: OperationView = await read(core, operations.get_operation, core.db, principal, operation_id)
        done = op.status in ("succeeded", "failed")
        progress = float(100 if done else op.progress)
        if progress > reported:  # progress notifications must only increase
            reported = progress
            await ctx.report_progress(progress, 100, f"{op.kind} {op.status} ({op.progress}%)")
        if done or time.monotonic() >= deadline:
            return OperationWait(operation=letscloud_operation(op), finished=done)
        await asyncio.sleep(POLL_S)


@contextmanager
def _logging_left_alone() -> Iterator[None]:
    """The SDK's server configures the root logger when it is made (`logging.basicConfig` with a Rich handler, when
    the root has none yet): in `cloudplane serve`, which builds it before its own JSON logging is set up, every
    line would then also be printed in Rich's format (the log test caught alembic's). Whatever it adds goes."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def build_server(identify: Identify) -> MCPServer:
    """The MCP server with every tool; `identify` names the caller of each call."""
    with _logging_left_alone():
        mcp: MCPServer = MCPServer(
            name="cloudplane",
            title="Cloudplane",
            instructions=INSTRUCTIONS,
            version=__version__,
            # The SDK's own INFO lines (one per call) would go to stderr beside ours; ours say what matters.
            log_level="WARNING",
        )

    def tool(annotations: ToolAnnotations) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        def register(fn: Callable[..., Awaitable[Any]]) -> Any:
            mcp.add_tool(domain_errors(fn), annotations=annotations, structured_output=True)
            return fn

        return register

    # Servers

    @tool(READ_ONLY)
    async def list_servers(ctx: Context, page: Page = 1, per_page: PerPage = 20) -> w.ServerList:
        """List my servers with their status, addresses, plan, image and location."""
        c = await identify(ctx)
        result = await read(c.core, servers.list_servers, c.core, c.principal, page=page, per_page=per_page)
        return w.ServerList(
            servers=[w.ServerOut.of(s) for s in result.items], total=result.total, page=page, per_page=per_page
        )

    @tool(READ_ONLY)
    async def get_server(ctx: Context, server_id: ServerId) -> w.ServerOut:
        """Show one server: its status, what it is busy with, its addresses, plan, SSH keys and snapshots."""
        c = await identify(ctx)
        return w.ServerOut.of(await read(c.core, servers.get_server, c.core, c.principal, server_id))

    @tool(CHANGES)
    async def create_server(
        ctx: Context,
        label: Annotated[str, Field(min_length=1, max_length=255, description="A name for the server")],
        plan_slug: Annotated[str, Field(min_length=1, max_length=64, description="From list_plans")],
        image_slug: Annotated[str, Field(min_length=1, max_length=64, description="From list_images")],
        location_slug: Annotated[str, Field(min_length=1, max_length=64, description="From list_locations")],
        hostname: Annotated[
            str | None, Field(max_length=253, description="Defaults to one made from the label")
        ] = None,
        ssh_key_ids: Annotated[
            list[Annotated[int, Field(ge=1, le=MAX_ID)]], Field(max_length=50, description="From list_ssh_keys")
        ] = [],  # noqa: B006 - the SDK copies defaults into each call's validated arguments
    ) -> w.ServerCreated:
        """Create a server. It is ready when its operation (operation_id) succeeds: call wait_for_operation. The
        generated root password is shown only in this result."""
        c = await identify(ctx)
        with acting(c, ctx):
            server, password = await write(
                c.core,
                servers.create_server,
                c.core,
                c.principal,
                label=label,
                plan=plan_slug,
                image=image_slug,
                location=location_slug,
                hostname=hostname,
                ssh_key_ids=ssh_key_ids,
            )
        out = w.ServerCreated.of(server)
        out.root_password = password
        return out

    async def act(ctx: Context, server_id: int, action: str) -> w.ServerAccepted:
        c = await identify(ctx)
        with acting(c, ctx):
            server = await write(c.core, servers.server_action, c.core, c.principal, server_id, action)
        return w.ServerAccepted.of(server)

    @tool(CHANGES)
    async def start_server(ctx: Context, server_id: ServerId) -> w.ServerAccepted:
        """Start a stopped server; follow its operation_id with wait_for_operation."""
        return await act(ctx, server_id, "start")

    @tool(DESTRUCTIVE)
    async def stop_server(
        ctx: Context,
        server_id: ServerId,
        approval: ApproveStopServer,
        confirm: Confirm = False,
    ) -> w.ServerAccepted:
        """Stop (shut down) a running server; asks the user to confirm."""
        confirmed(approval, "the stop")
        return await act(ctx, server_id, "stop")

    @tool(DESTRUCTIVE)
    async def reboot_server(
        ctx: Context,
        server_id: ServerId,
        approval: ApproveRebootServer,
        confirm: Confirm = False,
    ) -> w.ServerAccepted:
        """Restart a running server; asks the user to confirm."""
        confirmed(approval, "the reboot")
        return await act(ctx, server_id, "reboot")

    @tool(DESTRUCTIVE)
    async def delete_server(
        ctx: Context,
        server_id: ServerId,
        approval: ApproveDeleteServer,
        confirm: Confirm = False,
    ) -> w.ServerAccepted:
        """Delete a server and its disk for good; asks the user to confirm. Follow its operation_id."""
        confirmed(approval, "the delete")
        return await act(ctx, server_id, "delete")

    @tool(DESTRUCTIVE)
    async def rebuild_server(
        ctx: Context,
        server_id: ServerId,
        approval: ApproveRebuildServer,
        image_slug: Annotated[
            str | None, Field(max_length=64, description="The image to install (list_images); default: the same")
        ] = None,
        confirm: Confirm = False,
    ) -> w.ServerCreated:
        """Erase a server's disk and install an image on it again, with a new root password (shown only here);
        asks the user to confirm."""
        confirmed(approval, "the rebuild")
        c = await identify(ctx)
        with acting(c, ctx):
            server, password = await write(
                c.core, servers.rebuild_server, c.core, c.principal, server_id, image=image_slug
            )
        out = w.ServerCreated.of(server)
        out.root_password = password
        return out

    # SSH keys

    @tool(READ_ONLY)
    async def list_ssh_keys(ctx: Context, page: Page = 1, per_page: PerPage = 20) -> w.SSHKeyList:
        """List my SSH keys."""
        c = await identify(ctx)
        result = await read(c.core, ssh_keys.list_keys, c.core, c.principal, page=page, per_page=per_page)
        return w.SSHKeyList(
            ssh_keys=[w.SSHKeyOut.of(k) for k in result.items], total=result.total, page=page, per_page=per_page
        )

    @tool(READ_ONLY)
    async def get_ssh_key(ctx: Context, key_id: KeyId) -> w.SSHKeyOut:
        """Show one SSH key."""
        c = await identify(ctx)
        return w.SSHKeyOut.of(await read(c.core, ssh_keys.get_key, c.core, c.principal, key_id))

    @tool(CHANGES)
    async def create_ssh_key(
        ctx: Context,
        title: Annotated[str, Field(min_length=1, max_length=200, description="A name, e.g. 'My laptop'")],
        public_key: Annotated[
            str, Field(min_length=1, max_length=16384, description="One OpenSSH public key line (ssh-ed25519 ...)")
        ],
    ) -> w.SSHKeyOut:
        """Add an SSH public key to my account, to put on servers I create."""
        c = await identify(ctx)
        with acting(c, ctx):
            key = await write(c.core, ssh_keys.create_key, c.core, c.principal, title=title, public_key=public_key)
        return w.SSHKeyOut.of(key)

    @tool(DESTRUCTIVE)
    async def delete_ssh_key(
        ctx: Context, key_id: KeyId, approval: ApproveDeleteSshKey, confirm: Confirm = False
    ) -> Deleted:
        """Remove an SSH key from my account; asks the user to confirm."""
        confirmed(approval, "the delete")
        c = await identify(ctx)
        with acting(c, ctx):
            await write(c.core, ssh_keys.delete_key, c.core, c.principal, key_id)
        return Deleted(id=key_id)

    # Snapshots and backups

    @tool(READ_ONLY)
    async def list_snapshots(
        ctx: Context, server_id: ServerId, page: Page = 1, per_page: PerPage = 20
    ) -> w.SnapshotList:
        """List a server's snapshots (backups), manual and automatic."""
        c = await identify(ctx)
        result = await read(
            c.core, snapshots.list_snapshots, c.core, c.principal, server_id, page=page, per_page=per_page
        )
        return w.SnapshotList(
            snapshots=[w.SnapshotOut.of(s) for s in result.items], total=result.total, page=page, per_page=per_page
        )

    @tool(READ_ONLY)
    async def get_snapshot(ctx: Context, server_id: ServerId, snapshot_id: SnapshotId) -> w.SnapshotOut:
        """Show one snapshot of a server."""
        c = await identify(ctx)
        return w.SnapshotOut.of(await read(c.core, snapshots.get_snapshot, c.core, c.principal, server_id, snapshot_id))

    @tool(CHANGES)
    async def create_snapshot(
        ctx: Context,
        server_id: ServerId,
        label: Annotated[str, Field(min_length=1, max_length=255, description="A name for the snapshot")],
        description: Annotated[str | None, Field(max_length=2000)] = None,
    ) -> w.SnapshotOut:
        """Back a server up: take a snapshot of its disk. It is ready when its status is available."""
        c = await identify(ctx)
        with acting(c, ctx):
            snap = await write(
                c.core, snapshots.create_snapshot, c.core, c.principal, server_id, label=label, description=description
            )
        return w.SnapshotOut.of(snap)

    @tool(DESTRUCTIVE)
    async def restore_snapshot(
        ctx: Context,
        server_id: ServerId,
        snapshot_id: SnapshotId,
        approval: ApproveRestoreSnapshot,
        confirm: Confirm = False,
    ) -> w.ServerAccepted:
        """Put a server's disk back as it was in one of its snapshots; asks the user to confirm."""
        confirmed(approval, "the restore")
        c = await identify(ctx)
        with acting(c, ctx):
            server = await write(c.core, snapshots.restore_snapshot, c.core, c.principal, server_id, snapshot_id)
        return w.ServerAccepted.of(server)

    @tool(DESTRUCTIVE)
    async def delete_snapshot(
        ctx: Context,
        server_id: ServerId,
        snapshot_id: SnapshotId,
        approval: ApproveDeleteSnapshot,
        confirm: Confirm = False,
    ) -> Deleted:
        """Delete a snapshot; asks the user to confirm."""
        confirmed(approval, "the delete")
        c = await identify(ctx)
        with acting(c, ctx):
            await write(c.core, snapshots.delete_snapshot, c.core, c.principal, server_id, snapshot_id)
        return Deleted(id=snapshot_id)

    @tool(READ_ONLY)
    async def get_backup_schedule(ctx: Context, server_id: ServerId) -> BackupSchedule:
        """Show a server's automatic backup schedule."""
        c = await identify(ctx)
        s = await read(c.core, backups.get_schedule, c.core, c.principal, server_id)
        return BackupSchedule(server_id=s.server_id, enabled=s.enabled, hour=s.hour, keep=s.keep)

    @tool(CHANGES)
    async def set_backup_schedule(
        ctx: Context,
        server_id: ServerId,
        enabled: bool | None = None,
        hour: Annotated[int | None, Field(ge=0, le=23, description="Hour of the day, UTC")] = None,
        keep: Annotated[int | None, Field(ge=1, le=backups.MAX_KEEP, description="Automatic backups kept")] = None,
    ) -> BackupSchedule:
        """Turn a server's daily automatic backups on or off, or change their hour and how many are kept."""
        c = await identify(ctx)
        with acting(c, ctx):
            s = await write(
                c.core, backups.set_schedule, c.core, c.principal, server_id, enabled=enabled, hour=hour, keep=keep
            )
        return BackupSchedule(server_id=s.server_id, enabled=s.enabled, hour=s.hour, keep=s.keep)

    # Catalog, account and costs

    @tool(READ_ONLY)
    async def list_plans(ctx: Context) -> w.PlanList:
        """List the server plans I can create (CPU, RAM, disk and monthly price)."""
        c = await identify(ctx)
        plans = c.core.catalog.view().offered_plans
        return w.PlanList(plans=[w.PlanOut.of(p) for p in plans], total=len(plans), page=1, per_page=len(plans))

    @tool(READ_ONLY)
    async def list_images(ctx: Context) -> w.ImageList:
        """List the operating system images a server can run."""
        c = await identify(ctx)
        images = c.core.catalog.view().offered_images
        return w.ImageList(images=[w.ImageOut.of(i) for i in images], total=len(images), page=1, per_page=len(images))

    @tool(READ_ONLY)
    async def list_locations(ctx: Context) -> w.LocationList:
        """List where servers can be created, and whether each location is open now."""
        c = await identify(ctx)
        view = c.core.catalog.view()
        locations = [
            w.LocationOut.of(loc).model_copy(update={"available": view.is_open(loc)}) for loc in view.locations
        ]
        return w.LocationList(locations=locations, total=len(locations), page=1, per_page=len(locations))

    @tool(READ_ONLY)
    async def get_account_info(ctx: Context) -> w.AccountOut:
        """Show my account: name, email, balance and currency."""
        c = await identify(ctx)
        account, user = await read(c.core, accounts.get_account, c.core.db, c.principal)
        return w.AccountOut.of(account, user, await read(c.core, billing.balance_of, c.core, c.principal))

    @tool(READ_ONLY)
    async def get_costs(ctx: Context) -> Costs:
        """Show what my servers cost a month, each and in total."""
        c = await identify(ctx)
        items: list[ServerCost] = []
        currency, page = "USD", 1
        while True:
            result = await read(c.core, servers.list_servers, c.core, c.principal, page=page, per_page=100)
            for s in result.items:
                currency = s.prices.currency
                items.append(
                    ServerCost(
                        id=s.id,
                        label=s.label,
                        status=s.words.letscloud,
                        monthly=s.prices.monthly,
                        hourly=s.prices.hourly,
                    )
                )
            if page * 100 >= result.total:
                break
            page += 1
        return Costs(currency=currency, monthly_total=sum((i.monthly for i in items), Decimal(0)), servers=items)

    @tool(READ_ONLY)
    async def get_recommendations(
        ctx: Context, days: RecommendationDays = recommendations.DEFAULT_DAYS
    ) -> w.RecommendationList:
        """Ways to cut my costs: idle servers, oversized plans, servers stopped for long, old snapshots, idle GPU
        instances; each with the figures read, the action (and its API call) and the monthly saving."""
        c = await identify(ctx)
        report = await read(c.core, recommendations.recommend, c.core, c.principal, days=days)
        return w.RecommendationList.of(report)

    # Billing

    @tool(READ_ONLY)
    async def get_usage(ctx: Context) -> dict[str, Any]:
        """This month's usage so far and what it costs: per server (`services`: CPU hours, storage, bandwidth, cost)
        and in all (`usage`, `estimated_cost`), as GET /api/v1/billing/usage answers."""
        c = await identify(ctx)
        data, top = usage_json(await read(c.core, billing.current_usage, c.core, c.principal))
        return {**data, **top}

    @tool(READ_ONLY)
    async def list_invoices(
        ctx: Context,
        status: Literal["pending", "paid", "overdue"] | None = None,
        page: Page = 1,
        per_page: PerPage = 20,
    ) -> InvoiceList:
        """List my invoices, newest first, with their lines, totals, status and due date."""
        c = await identify(ctx)
        result = await read(
            c.core, billing.list_invoices, c.core, c.principal, page=page, per_page=per_page, status=status
        )
        return InvoiceList(
            invoices=[invoice_out(i) for i in result.items], total=result.total, page=page, per_page=per_page
        )

    @tool(READ_ONLY)
    async def get_invoice(ctx: Context, invoice_id: InvoiceRef) -> InvoiceOut:
        """Show one of my invoices with its lines (its PDF is at /api/v1/billing/invoices/{id}/pdf)."""
        c = await identify(ctx)
        return invoice_out(await read(c.core, billing.get_invoice, c.core, c.principal, parse_invoice_id(invoice_id)))

    # Support

    @tool(READ_ONLY)
    async def list_tickets(
        ctx: Context,
        status: TicketStatus | None = None,
        page: Page = 1,
        per_page: PerPage = 20,
    ) -> TicketList:
        """List my support tickets, newest first."""
        c = await identify(ctx)
        result = await read(
            c.core, support.list_tickets, c.core, c.principal, page=page, per_page=per_page, status=status
        )
        return TicketList(
            tickets=[ticket_out(t) for t in result.items], total=result.total, page=page, per_page=per_page
        )

    @tool(READ_ONLY)
    async def get_ticket(ctx: Context, ticket_id: TicketRef) -> TicketDetailOut:
        """Show one of my support tickets with its messages, oldest first."""
        c = await identify(ctx)
        return ticket_detail_out(
            await read(c.core, support.get_ticket, c.core, c.principal, parse_ticket_id(ticket_id))
        )

    @tool(CHANGES)
    async def open_ticket(
        ctx: Context,
        subject: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")],
        description: TicketText,
        priority: Priority = Priority.MEDIUM,
        category: Category = Category.GENERAL,
        server_id: Annotated[int | None, Field(ge=1, le=MAX_ID, description="One of my servers it is about")] = None,
    ) -> TicketDetailOut:
        """Open a support ticket (staff are told); `description` is its first message."""
        c = await identify(ctx)
        detail = await write(
            c.core,
            support.create_ticket,
            c.core,
            c.principal,
            subject=subject,
            description=description,
            priority=priority,
            category=category,
            server_id=server_id,
            attachments=[],
        )
        mail.kick(c.core)
        return ticket_detail_out(detail)

    @tool(CHANGES)
    async def reply_to_ticket(ctx: Context, ticket_id: TicketRef, message: TicketText) -> MessageOut:
        """Write on one of my tickets (a resolved one is reopened; a closed one must be reopened first)."""
        c = await identify(ctx)
        posted = await write(
            c.core, support.add_message, c.core, c.principal, parse_ticket_id(ticket_id), body=message, attachments=[]
        )
        mail.kick(c.core)
        return message_out(posted.message, USER_BASE)

    # Operations

    @tool(READ_ONLY)
    async def get_operation(ctx: Context, operation_id: OperationId) -> OperationOut:
        """Show a long action (create, stop, snapshot ...): its status, progress and error."""
        c = await identify(ctx)
        return letscloud_operation(await read(c.core, operations.get_operation, c.core.db, c.principal, operation_id))

    @tool(READ_ONLY)
    async def list_operations(
        ctx: Context,
        status: Literal["pending", "running", "succeeded", "failed"] | None = None,
        server_id: Annotated[int | None, Field(ge=1, le=MAX_ID, description="Only this server's operations")] = None,
        page: Page = 1,
        per_page: PerPage = 20,
    ) -> OperationList:
        """List my recent long actions, newest first."""
        c = await identify(ctx)
        result = await read(
            c.core,
            operations.list_operations,
            c.core.db,
            c.principal,
            page=page,
            per_page=per_page,
            status=status,
            target_type="server" if server_id is not None else None,
            target_id=str(server_id) if server_id is not None else None,
        )
        return OperationList(
            operations=[letscloud_operation(op) for op in result.items],
            total=result.total,
            page=page,
            per_page=per_page,
        )

    @tool(READ_ONLY)
    async def wait_for_operation(
        ctx: Context,
        operation_id: OperationId,
        timeout_seconds: Annotated[
            float, Field(gt=0, le=MAX_WAIT_S, description="Give up waiting after this long (the action goes on)")
        ] = 300,
    ) -> OperationWait:
        """Wait until a long action ends, sending progress notifications meanwhile; its final status and error."""
        return await follow(await identify(ctx), ctx, operation_id, timeout_seconds)

    # Container apps

    @tool(READ_ONLY)
    async def list_apps(
        ctx: Context,
        status: Literal["running", "stopped", "failed"] | None = None,
        page: Page = 1,
        per_page: PerPage = 20,
    ) -> AppList:
        """List my container apps, newest first."""
        c = await identify(ctx)
        return app_list(
            await read(c.core, apps.list_apps, c.core, c.principal, page=page, per_page=per_page, status=status)
        )

    @tool(READ_ONLY)
    async def get_app(ctx: Context, app_id: AppId) -> AppOut:
        """Show one container app: its status, URL, limits and variables."""
        c = await identify(ctx)
        return app_out(await read(c.core, apps.get_app, c.core, c.principal, app_id))

    @tool(CHANGES)
    async def create_app(ctx: Context, app: AppCreate) -> AppOut:
        """Create a container app (stopped until deployed), built from its git repository."""
        c = await identify(ctx)
        with acting(c, ctx):
            return app_out(await write(c.core, apps.create_app, c.core, c.principal, **app.model_dump()))

    @tool(DESTRUCTIVE)
    async def delete_app(
        ctx: Context, app_id: AppId, approval: ApproveDeleteApp, confirm: Confirm = False
    ) -> DeletedApp:
        """Delete a container app; asks the user to confirm."""
        confirmed(approval, "the delete")
        c = await identify(ctx)
        with acting(c, ctx):
            await write(c.core, apps.delete_app, c.core, c.principal, app_id)
        return DeletedApp(id=app_id)

    # GPU instances

    @tool(READ_ONLY)
    async def search_gpu_offers(
        ctx: Context,
        gpu_model: Annotated[str | None, Field(max_length=100, description='e.g. "RTX 4090", "A100"')] = None,
        min_gpu_count: Annotated[int | None, Field(ge=1, le=64)] = None,
        max_price_per_hour: Annotated[float | None, Field(ge=0, le=100_000, description="USD")] = None,
        region: Annotated[str | None, Field(max_length=100)] = None,
        provider: Annotated[str | None, Field(max_length=50)] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> GpuOffers:
        """Search GPU machines to rent across marketplaces, cheapest first (only those available now)."""
        c = await identify(ctx)
        query = OfferQuery(
            gpu_model=gpu_model,
            min_gpu_count=min_gpu_count,
            max_price=max_price_per_hour,
            region=region,
            available=True,
            sort="price",
            limit=limit,
        )
        result = await gpu.search_offers(c.core, query, provider)
        return GpuOffers(offers=result.offers, errors=result.errors)

    @tool(CHANGES)
    async def rent_gpu_instance(
        ctx: Context,
        provider: Annotated[str, Field(min_length=1, max_length=50)],
        offer_id: Annotated[str, Field(min_length=1, max_length=100, description="From search_gpu_offers")],
        image: Annotated[
            str, Field(min_length=1, max_length=255, description="A container image, e.g. pytorch/pytorch")
        ],
        label: Annotated[str, Field(min_length=1, max_length=255)],
        ssh_key: Annotated[str | None, Field(max_length=16384, description="An OpenSSH public key line")] = None,
    ) -> w.ServerAccepted:
        """Rent a GPU offer as an instance (billed by the hour); follow its operation_id with wait_for_operation."""
        c = await identify(ctx)
        offer = await gpu.find_offer(c.core, provider, offer_id)
        with acting(c, ctx):
            server = await write(
                c.core, gpu.rent, c.core, c.principal, offer, image=image, label=label, ssh_key=ssh_key
            )
        return w.ServerAccepted.of(server)

    @tool(READ_ONLY)
    async def list_gpu_instances(ctx: Context, page: Page = 1, per_page: PerPage = 20) -> w.ServerList:
        """List my rented GPU instances."""
        c = await identify(ctx)
        result = await read(c.core, gpu.list_instances, c.core, c.principal, page=page, per_page=per_page)
        return w.ServerList(
            servers=[w.ServerOut.of(s) for s in result.items], total=result.total, page=page, per_page=per_page
        )

    @tool(DESTRUCTIVE)
    async def release_gpu_instance(
        ctx: Context,
        instance_id: Annotated[int, Field(ge=1, le=MAX_ID, description="From list_gpu_instances")],
        approval: ApproveReleaseGpuInstance,
        confirm: Confirm = False,
    ) -> w.ServerAccepted:
        """Give a rented GPU instance back (its billing stops); asks the user to confirm."""
        confirmed(approval, "the release")
        c = await identify(ctx)
        await read(c.core, gpu.get_instance, c.core, c.principal, instance_id)  # only an instance, not a server
        with acting(c, ctx):
            server = await write(c.core, servers.server_action, c.core, c.principal, instance_id, "delete")
        return w.ServerAccepted.of(server)

    return mcp
