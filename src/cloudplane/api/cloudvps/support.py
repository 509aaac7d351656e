"""CloudVPS Pro's support tickets (/api/v1/support/tickets) and the staff side under /admin/tickets: ids
"ticket-N", "message-N", "attachment-N"; files in and out as the document has them (base64 in a message), and
each file downloadable by the ticket's parties only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloudplane.api.accounts.schemas import ErrorEnvelope, errors, parse_user_id, user_id
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer
from cloudplane.api.cloudvps.vps import parse_vps_id
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.api.common.ids import parse_id
from cloudplane.api.common.schemas import Request
from cloudplane.core import Core
from cloudplane.domain.attachments import MAX_ATTACHMENT_BYTES, MAX_FILENAME_CHARS
from cloudplane.domain.errors import NotFound
from cloudplane.domain.tickets import Category, Priority, TicketStatus
from cloudplane.services import mail, support
from cloudplane.services.accounts import Principal
from cloudplane.services.support import (
    AttachmentFile,
    AttachmentView,
    MessageView,
    NewAttachment,
    Posted,
    TicketDetail,
    TicketView,
)

T = TypeVar("T")

_NOT_FOUND: Responses = {404: {"model": ErrorEnvelope, "description": "No such ticket (or file) of yours"}}
_CONFLICT: Responses = {409: {"model": ErrorEnvelope, "description": "Not possible in the ticket's status"}}
_TOO_LARGE: Responses = {413: {"model": ErrorEnvelope, "description": "A file over 10 MiB, or the body too large"}}
router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["CloudVPS support"],
    responses={**errors(400, 401, 403, 422, 429), **_NOT_FOUND},
)
admin_router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["Admin"],
    responses={**errors(400, 401, 403, 422, 429), **_NOT_FOUND},
)


def _base64_chars(n: int) -> int:
    return (n + 2) // 3 * 4


# Bodies that carry files may hold two files of the largest size (with room for the text); others keep 1 MiB.
FILE_BODY_MAX_BYTES = 2 * _base64_chars(MAX_ATTACHMENT_BYTES) + 1024 * 1024
FILE_BODY_PATHS = (
    r"/api/v1/support/tickets",
    r"/api/v1/support/tickets/[^/]+/messages",
    r"/api/v1/admin/tickets/[^/]+/messages",
)
BODY_LIMITS = [(path, FILE_BODY_MAX_BYTES) for path in FILE_BODY_PATHS]

TicketId = Annotated[str, Path(description='The ticket id, e.g. "ticket-123" (a bare "123" works too)')]
AttachmentId = Annotated[str, Path(description='The file\'s id, e.g. "attachment-7"')]
PageQuery = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")]
LimitQuery = Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")]


class AttachmentIn(Request):
    filename: str = Field(min_length=1, max_length=MAX_FILENAME_CHARS, description="Shown when it is downloaded")
    content_type: str | None = Field(
        default=None,
        max_length=255,
        description="What the sender thinks it is; ignored: the type is found from the bytes (PNG, JPEG, GIF, WebP, "
        "PDF, ZIP, gzip or UTF-8 text are allowed)",
    )
    data: str = Field(description="The file, base64 (standard alphabet; a data: URL works too); at most 10 MiB decoded")


Attachments = Annotated[list[AttachmentIn], Field(default_factory=list, max_length=support.MAX_ATTACHMENTS_PER_MESSAGE)]


class TicketCreate(Request):
    subject: str = Field(min_length=1, max_length=200, pattern=r"\S")
    description: str = Field(min_length=1, max_length=20_000, pattern=r"\S")
    priority: Priority = Priority.MEDIUM
    category: Category = Category.GENERAL
    vps_id: str | None = Field(default=None, max_length=40, description='One of your VPSs, e.g. "vps-123"')
    attachments: Attachments


class TicketUpdate(Request):
    status: TicketStatus | None = Field(
        default=None, description="closed, resolved, or open to reopen a resolved or closed ticket"
    )
    priority: Priority | None = None


class MessageCreate(Request):
    message: str = Field(min_length=1, max_length=20_000, pattern=r"\S")
    attachments: Attachments


class AssignIn(Request):
    assignee_id: str | None = Field(
        default=None,
        max_length=40,
        description='An admin, e.g. "user-1"; null unassigns; left out: the caller takes the ticket',
    )


class AttachmentOut(BaseModel):
    id: str
    filename: str
    content_type: str = Field(description="The type found from the file's bytes")
    size: int = Field(description="Bytes")
    url: str = Field(description="Where the ticket's parties download it")
    created_at: datetime


class AuthorOut(BaseModel):
    id: str | None
    name: str | None
    role: Literal["user", "staff"]


class MessageOut(BaseModel):
    id: str
    ticket_id: str
    message: str
    is_staff: bool
    author: AuthorOut
    attachments: list[AttachmentOut]
    created_at: datetime


class TicketOut(BaseModel):
    id: str
    subject: str
    status: TicketStatus
    priority: Priority
    category: Category
    vps_id: str | None
    user_id: str | None
    assigned_to: str | None = Field(description='The admin handling it, e.g. "user-1"')
    created_at: datetime
    updated_at: datetime
    message_count: int


class TicketDetailOut(TicketOut):
    description: str
    messages: list[MessageOut]


class AdminTicketOut(TicketOut):
    user_email: str | None


class AdminTicketDetailOut(TicketDetailOut):
    user_email: str | None


class TicketListReply(BaseModel):
    success: bool = True
    data: list[TicketOut]
    pagination: Pagination


class AdminTicketListReply(BaseModel):
    success: bool = True
    data: list[AdminTicketOut]
    pagination: Pagination


class TicketReply(BaseModel):
    success: bool = True
    message: str | None = None
    data: TicketDetailOut


class AdminTicketReply(BaseModel):
    success: bool = True
    message: str | None = None
    data: AdminTicketDetailOut


class MessageReply(BaseModel):
    success: bool = True
    message: str
    data: MessageOut
    ticket: TicketOut = Field(description="The ticket after the reply (a reply can move its status)")


def parse_ticket_id(value: str) -> int:
    number = parse_id(value.removeprefix("ticket-"))
    if number is None:
        raise NotFound("Ticket not found", ticket_id=value)
    return number


def parse_attachment_id(value: str) -> int:
    number = parse_id(value.removeprefix("attachment-"))
    if number is None:
        raise NotFound("Attachment not found", attachment_id=value)
    return number


def _server_id(vps_id: str | None) -> int | None:
    if vps_id is None:
        return None
    try:
        return parse_vps_id(vps_id)
    except NotFound:
        raise NotFound("VPS not found in your account", field="vps_id", vps_id=vps_id) from None


def _new(attachments: list[AttachmentIn]) -> list[NewAttachment]:
    return [NewAttachment(a.filename, a.data) for a in attachments]


def _ticket_fields(t: TicketView) -> dict[str, Any]:
    return {
        "id": f"ticket-{t.id}",
        "subject": t.subject,
        "status": t.status,
        "priority": t.priority,
        "category": t.category,
        "vps_id": f"vps-{t.server_id}" if t.server_id is not None else None,
        "user_id": user_id(t.user_id) if t.user_id is not None else None,
        "assigned_to": user_id(t.assignee_user_id) if t.assignee_user_id is not None else None,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
        "message_count": t.message_count,
    }


def ticket_out(t: TicketView) -> TicketOut:
    return TicketOut(**_ticket_fields(t))


def _attachment_out(a: AttachmentView, base: str) -> AttachmentOut:
    return AttachmentOut(
        id=f"attachment-{a.id}",
        filename=a.filename,
        content_type=a.content_type,
        size=a.size_bytes,
        url=f"{base}/ticket-{a.ticket_id}/attachments/attachment-{a.id}",
        created_at=a.created_at,
    )


def message_out(m: MessageView, base: str) -> MessageOut:
    return MessageOut(
        id=f"message-{m.id}",
        ticket_id=f"ticket-{m.ticket_id}",
        message=m.body,
        is_staff=m.is_staff,
        author=AuthorOut(
            id=user_id(m.author_user_id) if m.author_user_id is not None else None,
            name=m.author_name,
            role="staff" if m.is_staff else "user",
        ),
        attachments=[_attachment_out(a, base) for a in m.attachments],
        created_at=m.created_at,
    )


USER_BASE = "/api/v1/support/tickets"
ADMIN_BASE = "/api/v1/admin/tickets"


def ticket_detail_out(detail: TicketDetail) -> TicketDetailOut:
    return TicketDetailOut(
        **_ticket_fields(detail.ticket),
        description=detail.description,
        messages=[message_out(m, USER_BASE) for m in detail.messages],
    )


def _adminticket_detail_out(detail: TicketDetail) -> AdminTicketDetailOut:
    return AdminTicketDetailOut(
        **_ticket_fields(detail.ticket),
        user_email=detail.ticket.user_email,
        description=detail.description,
        messages=[message_out(m, ADMIN_BASE) for m in detail.messages],
    )


async def _post(
    core: Core, principal: Principal, fn: Callable[..., Posted], ticket_id: str, body: MessageCreate, base: str
) -> Response:
    posted = await _change(
        core,
        fn,
        core,
        principal,
        parse_ticket_id(ticket_id),
        body=body.message,
        attachments=_new(body.attachments),
        files=bool(body.attachments),
    )
    return reply(
        MessageReply(
            message="Message added",
            data=message_out(posted.message, base),
            ticket=ticket_out(posted.ticket),
        ),
        201,
    )


async def _change(core: Core, fn: Callable[..., T], *args: Any, files: bool = False, **kwargs: Any) -> T:
    """A service call that changes a ticket, then the mail it queued sent. Decoding and storing files (up to tens
    of MiB) goes to a thread on any database: done inline, it would hold the event loop for tens of ms."""
    result = await (run_in_threadpool(fn, *args, **kwargs) if files else write(core, fn, *args, **kwargs))
    mail.kick(core)
    return result


def content_disposition(filename: str) -> str:
    """`attachment` with the name in ASCII for old clients and in UTF-8 (RFC 6266, RFC 8187) for the rest."""
    fallback = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _download(
    core: Core, principal: Principal, fn: Callable[..., AttachmentFile], ticket_id: str, attachment_id: str
) -> Response:
    # Up to 10 MiB read from the database: off the event loop.
    found = await run_in_threadpool(fn, core, principal, parse_ticket_id(ticket_id), parse_attachment_id(attachment_id))
    return Response(
        found.data,
        media_type=found.content_type,
        headers={
            "Content-Disposition": content_disposition(found.filename),
            # Served as the type its bytes were found to be, never sniffed into another, never run as a page.
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/support/tickets", response_model=TicketListReply)
async def list_tickets(
    core: CoreDep,
    principal: PrincipalDep,
    page: PageQuery = 1,
    limit: LimitQuery = 20,
    status: Annotated[TicketStatus | None, Query(description="Only tickets in this status")] = None,
    priority: Annotated[Priority | None, Query(description="Only tickets of this priority")] = None,
) -> Response:
    """Your account's tickets, newest first."""
    result = await read(
        core, support.list_tickets, core, principal, page=page, per_page=limit, status=status, priority=priority
    )
    data = [ticket_out(t) for t in result.items]
    return reply(TicketListReply(data=data, pagination=Pagination.of(page, limit, result.total)))


@router.post("/support/tickets", status_code=201, response_model=TicketReply, responses=_TOO_LARGE)
async def create_ticket(body: TicketCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Open a ticket. `description` is its first message; `attachments` (optional) are attached to it."""
    detail = await _change(
        core,
        support.create_ticket,
        core,
        principal,
        subject=body.subject,
        description=body.description,
        priority=body.priority,
        category=body.category,
        server_id=_server_id(body.vps_id),
        attachments=_new(body.attachments),
        files=bool(body.attachments),
    )
    return reply(TicketReply(message="Ticket created", data=ticket_detail_out(detail)), 201)


@router.get("/support/tickets/{ticket_id}", response_model=TicketReply)
async def get_ticket(ticket_id: TicketId, core: CoreDep, principal: PrincipalDep) -> Response:
    """The ticket with its messages, oldest first, and their files."""
    detail = await read(core, support.get_ticket, core, principal, parse_ticket_id(ticket_id))
    return reply(TicketReply(data=ticket_detail_out(detail)))


@router.put("/support/tickets/{ticket_id}", response_model=TicketReply, responses=_CONFLICT)
async def update_ticket(ticket_id: TicketId, body: TicketUpdate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Close or resolve the ticket, reopen it (`open`, from resolved or closed), or change its priority."""
    detail = await _change(
        core, support.update_ticket, core, principal, parse_ticket_id(ticket_id), status=body.status,
        priority=body.priority,
    )  # fmt: skip
    return reply(TicketReply(message="Ticket updated", data=ticket_detail_out(detail)))


@router.post(
    "/support/tickets/{ticket_id}/messages",
    status_code=201,
    response_model=MessageReply,
    responses={**_CONFLICT, **_TOO_LARGE},
)
async def add_message(ticket_id: TicketId, body: MessageCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Write on the ticket, with files if you like (each at most 10 MiB). Writing on a resolved ticket reopens it;
    a closed one must be reopened first."""
    return await _post(core, principal, support.add_message, ticket_id, body, USER_BASE)


@router.get(
    "/support/tickets/{ticket_id}/attachments/{attachment_id}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
)
async def download_attachment(
    ticket_id: TicketId, attachment_id: AttachmentId, core: CoreDep, principal: PrincipalDep
) -> Response:
    """A file of one of your tickets, as a download."""
    return await _download(core, principal, support.get_attachment, ticket_id, attachment_id)


@admin_router.get("/admin/tickets", response_model=AdminTicketListReply)
async def admin_list_tickets(
    core: CoreDep,
    principal: PrincipalDep,
    page: PageQuery = 1,
    limit: LimitQuery = 20,
    status: Annotated[TicketStatus | None, Query(description="Only tickets in this status")] = None,
    priority: Annotated[Priority | None, Query(description="Only tickets of this priority")] = None,
    category: Annotated[Category | None, Query(description="Only tickets of this category")] = None,
    user_id: Annotated[str | None, Query(max_length=40, description='Only this user\'s, e.g. "user-123"')] = None,
    assigned_to: Annotated[
        str | None, Query(max_length=40, description='Only those assigned to this admin ("user-1"), or "none"')
    ] = None,
) -> Response:
    """Every account's tickets, newest first, with who opened each."""
    result = await read(
        core,
        support.admin_list_tickets,
        core,
        principal,
        page=page,
        per_page=limit,
        status=status,
        priority=priority,
        category=category,
        user_id=parse_user_id(user_id) if user_id is not None else None,
        assignee_user_id=parse_user_id(assigned_to) if assigned_to not in (None, "none") else None,
        unassigned=assigned_to == "none",
    )
    data = [AdminTicketOut(**_ticket_fields(t), user_email=t.user_email) for t in result.items]
    return reply(AdminTicketListReply(data=data, pagination=Pagination.of(page, limit, result.total)))


@admin_router.get("/admin/tickets/{ticket_id}", response_model=AdminTicketReply)
async def admin_get_ticket(ticket_id: TicketId, core: CoreDep, principal: PrincipalDep) -> Response:
    detail = await read(core, support.admin_get_ticket, core, principal, parse_ticket_id(ticket_id))
    return reply(AdminTicketReply(data=_adminticket_detail_out(detail)))


@admin_router.put("/admin/tickets/{ticket_id}", response_model=AdminTicketReply, responses=_CONFLICT)
async def admin_update_ticket(
    ticket_id: TicketId, body: TicketUpdate, core: CoreDep, principal: PrincipalDep
) -> Response:
    """Move the ticket through open, in-progress, resolved and closed, or change its priority; its owner is told."""
    detail = await _change(
        core, support.admin_update_ticket, core, principal, parse_ticket_id(ticket_id), status=body.status,
        priority=body.priority,
    )  # fmt: skip
    return reply(AdminTicketReply(message="Ticket updated", data=_adminticket_detail_out(detail)))


@admin_router.post(
    "/admin/tickets/{ticket_id}/messages",
    status_code=201,
    response_model=MessageReply,
    responses={**_CONFLICT, **_TOO_LARGE},
)
async def admin_reply(ticket_id: TicketId, body: MessageCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Answer as staff (an open ticket is then in progress); the ticket's owner is told by mail."""
    return await _post(core, principal, support.admin_reply, ticket_id, body, ADMIN_BASE)


@admin_router.post("/admin/tickets/{ticket_id}/assign", response_model=AdminTicketReply)
async def admin_assign_ticket(
    ticket_id: TicketId, core: CoreDep, principal: PrincipalDep, body: AssignIn | None = None
) -> Response:
    """Give the ticket to an admin: `{"assignee_id": "user-1"}`, `null` for nobody, no body for yourself."""
    if body is None or "assignee_id" not in body.model_fields_set:
        assignee: int | None = principal.user_id
    else:
        assignee = parse_user_id(body.assignee_id) if body.assignee_id is not None else None
    detail = await _change(core, support.assign_ticket, core, principal, parse_ticket_id(ticket_id), assignee)
    return reply(AdminTicketReply(message="Ticket assigned", data=_adminticket_detail_out(detail)))


@admin_router.get(
    "/admin/tickets/{ticket_id}/attachments/{attachment_id}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
)
async def admin_download_attachment(
    ticket_id: TicketId, attachment_id: AttachmentId, core: CoreDep, principal: PrincipalDep
) -> Response:
    return await _download(core, principal, support.admin_get_attachment, ticket_id, attachment_id)
