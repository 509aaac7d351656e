"""Support tickets: an account's tickets, their messages and attached files, and the staff side (admins see every
ticket, reply and assign). Each change writes its event, and the mail it causes, in its own transaction; the
routes send that mail after the commit (services/mail.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, insert, select, update
from sqlalchemy.orm import Session, undefer

from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.db.tables import Ticket, TicketAttachment, TicketMessage, User, table_of, utcnow
from cloudplane.domain.attachments import decode_base64, require_allowed_type, safe_filename
from cloudplane.domain.errors import Conflict, InvalidState, NotFound, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.tickets import Category, Party, Priority, TicketStatus, may_move, moves_from, status_after_reply
from cloudplane.services import events, mail
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import Page, counted, paged_window, window
from cloudplane.services.servers import require_server
from cloudplane.services.tenancy import mine
from cloudplane.services.users import require_admin

MAX_ATTACHMENTS_PER_MESSAGE = 5

_tickets = table_of(Ticket)
_attachments = table_of(TicketAttachment)


@dataclass(frozen=True)
class NewAttachment:
    """A file as the request carries it: a name and base64 text. Its type is found from its bytes."""

    filename: str
    data_base64: str


@dataclass(frozen=True)
class _Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class AttachmentView:
    id: int
    ticket_id: int
    message_id: int
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class MessageView:
    id: int
    ticket_id: int
    author_user_id: int | None
    author_name: str | None
    is_staff: bool
    body: str
    created_at: datetime
    attachments: tuple[AttachmentView, ...]


@dataclass(frozen=True)
class TicketView:
    id: int
    account_id: int
    user_id: int | None
    user_email: str | None
    subject: str
    status: str
    priority: str
    category: str
    server_id: int | None
    assignee_user_id: int | None
    message_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TicketDetail:
    ticket: TicketView
    messages: tuple[MessageView, ...]

    @property
    def description(self) -> str:
        return self.messages[0].body if self.messages else ""


@dataclass(frozen=True)
class Posted:
    """A reply: the message and its ticket as the reply left it."""

    message: MessageView
    ticket: TicketView


@dataclass(frozen=True)
class AttachmentFile:
    filename: str
    content_type: str
    data: bytes


def _decode(attachments: Sequence[NewAttachment]) -> list[_Upload]:
    """Each file decoded (at most 10 MiB, counted while decoding) and its type found, before any transaction."""
    if len(attachments) > MAX_ATTACHMENTS_PER_MESSAGE:
        raise ValidationFailed(
            f"At most {MAX_ATTACHMENTS_PER_MESSAGE} files per message; send the others in another message",
            field="attachments",
            maximum=MAX_ATTACHMENTS_PER_MESSAGE,
        )
    uploads = []
    for index, attachment in enumerate(attachments):
        field = f"attachments[{index}].data"
        data = decode_base64(attachment.data_base64, field=field)
        uploads.append(_Upload(safe_filename(attachment.filename), require_allowed_type(data, field), data))
    return uploads


def _check_words(priority: str | None, category: str | None = None) -> None:
    for field, value, words in (("priority", priority, Priority), ("category", category, Category)):
        if value is not None and value not in set(words):
            raise ValidationFailed(f"{field} must be one of {', '.join(words)}", field=field)


def create_ticket(
    core: Core,
    principal: Principal,
    *,
    subject: str,
    description: str,
    priority: str,
    category: str,
    server_id: int | None = None,
    attachments: Sequence[NewAttachment] = (),
) -> TicketDetail:
    """Open a ticket; its description is its first message (with any files). A server named must be the caller's
    own, live: another account's is "not found", as one that never existed."""
    _check_words(priority, category)
    uploads = _decode(attachments)
    with core.db.write() as s:
        if server_id is not None:
            try:
                require_server(s, principal, server_id)
            except NotFound:
                raise NotFound("VPS not found in your account", field="server", server_id=server_id) from None
        now = utcnow()
        ticket = Ticket(
            account_id=principal.account_id,
            user_id=principal.user_id or None,
            subject=subject,
            category=category,
            priority=priority,
            status=TicketStatus.OPEN,
            server_id=server_id,
            message_count=1,
            created_at=now,
            updated_at=now,
        )
        s.add(ticket)
        s.flush()
        _insert_message(s, ticket.id, principal.user_id, Party.OWNER, description, uploads, now)
        events.record(
            s,
            EventType.TICKET_CREATED,
            account_id=ticket.account_id,
            target_type="ticket",
            target_id=ticket.id,
            data={"subject": subject, "priority": priority, "category": category, "server_id": server_id,
                  "attachments": len(uploads)},
        )  # fmt: skip
        owner = _user(s, ticket.user_id)
        _mail_staff(
            s,
            core.settings,
            ticket,
            f"New ticket: {subject}",
            f"{_who(owner)} opened ticket-{ticket.id} (priority {priority}, category {category}):\n\n{description}",
        )
        return _detail(s, ticket.id)


def list_tickets(
    core: Core,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    status: str | None = None,
    priority: str | None = None,
) -> Page[TicketView]:
    """The caller's account's tickets, newest first."""
    return _list(core, [mine(Ticket, principal)], page, per_page, status=status, priority=priority)


def admin_list_tickets(
    core: Core,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    status: str | None = None,
    priority: str | None = None,
    category: str | None = None,
    user_id: int | None = None,
    assignee_user_id: int | None = None,
    unassigned: bool = False,
) -> Page[TicketView]:
    """Every account's tickets, newest first, for staff."""
    require_admin(principal)
    where: list[ColumnElement[bool]] = []
    if category is not None:
        where.append(Ticket.category == category)
    if user_id is not None:
        where.append(Ticket.user_id == user_id)
    if assignee_user_id is not None:
        where.append(Ticket.assignee_user_id == assignee_user_id)
    if unassigned:
        where.append(Ticket.assignee_user_id.is_(None))
    return _list(core, where, page, per_page, status=status, priority=priority)


def _list(
    core: Core,
    where: list[ColumnElement[bool]],
    page: int,
    per_page: int,
    *,
    status: str | None,
    priority: str | None,
) -> Page[TicketView]:
    if status is not None:
        where.append(Ticket.status == status)
    if priority is not None:
        where.append(Ticket.priority == priority)
    with core.db.read() as s:
        total = s.scalar(counted(_tickets, where)) or 0
        rows = paged_window(
            select(Ticket, User.email).outerjoin(User, User.id == Ticket.user_id),
            Ticket.id,
            where,
            [Ticket.id.desc()],
            window(total, page, per_page),
        )
        items = [_view(ticket, email) for ticket, email in s.execute(rows).all()]
    return Page(items=items, total=total, page=page, per_page=per_page)


def get_ticket(core: Core, principal: Principal, ticket_id: int) -> TicketDetail:
    with core.db.read() as s:
        return _detail(s, _load(s, principal, ticket_id, Party.OWNER).id)


def admin_get_ticket(core: Core, principal: Principal, ticket_id: int) -> TicketDetail:
    with core.db.read() as s:
        return _detail(s, _load(s, principal, ticket_id, Party.STAFF).id)


def update_ticket(
    core: Core, principal: Principal, ticket_id: int, *, status: str | None = None, priority: str | None = None
) -> TicketDetail:
    """The owner closes, resolves or reopens the ticket, or changes its priority."""
    return _update(core, principal, ticket_id, Party.OWNER, status, priority)


def admin_update_ticket(
    core: Core, principal: Principal, ticket_id: int, *, status: str | None = None, priority: str | None = None
) -> TicketDetail:
    """Staff move the ticket through its statuses (domain/tickets.py) or change its priority."""
    return _update(core, principal, ticket_id, Party.STAFF, status, priority)


def _update(
    core: Core, principal: Principal, ticket_id: int, party: Party, status: str | None, priority: str | None
) -> TicketDetail:
    _check_words(priority)
    if status is not None and status not in set(TicketStatus):
        raise ValidationFailed(f"status must be one of {', '.join(TicketStatus)}", field="status")
    with core.db.write() as s:
        ticket = _load(s, principal, ticket_id, party)
        current = TicketStatus(ticket.status)
        values: dict[str, Any] = {}
        if status is not None and status != current:
            wanted = TicketStatus(status)
            if not may_move(party, current, wanted):
                allowed = moves_from(party, current)
                raise InvalidState(
                    f"A {current} ticket cannot be set to {wanted}"
                    + (" by its owner" if party is Party.OWNER and may_move(Party.STAFF, current, wanted) else "")
                    + f"; from {current} it can go to: {', '.join(allowed) or 'nothing'}",
                    field="status",
                    status=str(current),
                    allowed=allowed,
                )
            values["status"] = wanted
        if priority is not None and priority != ticket.priority:
            values["priority"] = priority
        if not values:
            return _detail(s, ticket.id)
        _change(s, ticket, current, **values)
        if "status" in values:
            _status_event(s, ticket, current, values["status"], party)
            if party is Party.STAFF:
                _mail_owner(
                    s,
                    core.settings,
                    ticket,
                    f"{ticket.subject}: now {values['status']}",
                    f"Support set your ticket ticket-{ticket.id} to {values['status']} (it was {current}).",
                )
        if "priority" in values:
            events.record(
                s,
                EventType.TICKET_UPDATED,
                account_id=ticket.account_id,
                target_type="ticket",
                target_id=ticket.id,
                data={"priority": priority, "by": str(party)},
            )
        return _detail(s, ticket.id)


def add_message(
    core: Core, principal: Principal, ticket_id: int, *, body: str, attachments: Sequence[NewAttachment] = ()
) -> Posted:
    """The owner writes on the ticket; on a resolved one that reopens it."""
    return _reply(core, principal, ticket_id, Party.OWNER, body, attachments)


def admin_reply(
    core: Core, principal: Principal, ticket_id: int, *, body: str, attachments: Sequence[NewAttachment] = ()
) -> Posted:
    """Staff answer; an open ticket is then in progress."""
    return _reply(core, principal, ticket_id, Party.STAFF, body, attachments)


def _reply(
    core: Core,
    principal: Principal,
    ticket_id: int,
    party: Party,
    body: str,
    attachments: Sequence[NewAttachment],
) -> Posted:
    uploads = _decode(attachments)
    with core.db.write() as s:
        ticket = _load(s, principal, ticket_id, party)
        current = TicketStatus(ticket.status)
        if current is TicketStatus.CLOSED:
            raise InvalidState(
                "The ticket is closed: reopen it (set its status to open) before writing on it",
                field="status",
                status=str(current),
            )
        now = utcnow()
        after = status_after_reply(party, current)
        changes: dict[str, Any] = {"message_count": _tickets.c.message_count + 1, "updated_at": now}
        if after is not None:
            changes["status"] = after
        _change(s, ticket, current, **changes)
        message_id = _insert_message(s, ticket.id, principal.user_id, party, body, uploads, now)
        events.record(
            s,
            EventType.TICKET_REPLIED,
            account_id=ticket.account_id,
            target_type="ticket",
            target_id=ticket.id,
            data={"message_id": message_id, "by": str(party), "attachments": len(uploads)},
        )
        if after is not None:
            _status_event(s, ticket, current, after, party)
        files = f"\n\n({len(uploads)} file(s) attached; see the ticket)" if uploads else ""
        if party is Party.STAFF:
            _mail_owner(s, core.settings, ticket, f"{ticket.subject}: new reply from support", body + files)
        else:
            _mail_staff(
                s,
                core.settings,
                ticket,
                f"Reply from customer: {ticket.subject}",
                f"{_who(_user(s, principal.user_id))} wrote on ticket-{ticket.id}:\n\n{body}{files}",
            )
        detail = _detail(s, ticket.id)
        return Posted(next(m for m in detail.messages if m.id == message_id), detail.ticket)


def assign_ticket(core: Core, principal: Principal, ticket_id: int, assignee_user_id: int | None) -> TicketDetail:
    """Give the ticket to an admin (None: to nobody). The assignee is told by mail, unless they assigned it
    themselves."""
    with core.db.write() as s:
        ticket = _load(s, principal, ticket_id, Party.STAFF)
        assignee = None
        if assignee_user_id is not None:
            assignee = s.get(User, assignee_user_id)
            if assignee is None or assignee.role != "admin":
                raise ValidationFailed(
                    'assignee_id must name an admin (staff) user, e.g. "user-1", or be null to unassign',
                    field="assignee_id",
                )
        previous = ticket.assignee_user_id
        if previous == assignee_user_id:
            return _detail(s, ticket.id)
        s.execute(
            update(_tickets).where(_tickets.c.id == ticket.id).values(assignee_user_id=assignee_user_id,
                                                                      updated_at=utcnow())
        )  # fmt: skip
        events.record(
            s,
            EventType.TICKET_ASSIGNED,
            account_id=ticket.account_id,
            target_type="ticket",
            target_id=ticket.id,
            data={"assignee_user_id": assignee_user_id, "previous_assignee_user_id": previous},
        )
        if assignee is not None and assignee.id != principal.user_id:
            mail.enqueue(
                s,
                core.settings,
                to=assignee.email,
                subject=f"[ticket-{ticket.id}] Assigned to you: {ticket.subject}",
                body=f"ticket-{ticket.id} ({ticket.priority}, {ticket.status}) is now yours: {ticket.subject}",
                topic=f"ticket-{ticket.id}",
            )
        return _detail(s, ticket.id)


def get_attachment(core: Core, principal: Principal, ticket_id: int, attachment_id: int) -> AttachmentFile:
    """A file of one of the caller's tickets."""
    return _file(core, principal, ticket_id, attachment_id, Party.OWNER)


def admin_get_attachment(core: Core, principal: Principal, ticket_id: int, attachment_id: int) -> AttachmentFile:
    return _file(core, principal, ticket_id, attachment_id, Party.STAFF)


def _file(core: Core, principal: Principal, ticket_id: int, attachment_id: int, party: Party) -> AttachmentFile:
    with core.db.read() as s:
        ticket = _load(s, principal, ticket_id, party)
        found = s.scalar(
            select(TicketAttachment)
            .options(undefer(TicketAttachment.data))
            .where(TicketAttachment.id == attachment_id, TicketAttachment.ticket_id == ticket.id)
        )
        if found is None:
            raise NotFound("Attachment not found", attachment_id=attachment_id)
        return AttachmentFile(found.filename, found.content_type, found.data)


def _load(s: Session, principal: Principal, ticket_id: int, party: Party) -> Ticket:
    """The ticket, if the caller is a party to it: its account's (owner), or any (staff: admins only)."""
    query = select(Ticket).where(Ticket.id == ticket_id)
    if party is Party.STAFF:
        require_admin(principal)
    else:
        query = query.where(mine(Ticket, principal))
    ticket = s.scalar(query)
    if ticket is None:
        raise NotFound("Ticket not found", ticket_id=ticket_id)
    return ticket


def _change(s: Session, ticket: Ticket, current: TicketStatus, **values: Any) -> None:
    """Update the ticket if its status is still `current`: of two concurrent changes, the second is refused."""
    values.setdefault("updated_at", utcnow())
    result = s.execute(
        update(_tickets).where(_tickets.c.id == ticket.id, _tickets.c.status == current).values(**values)
    )
    if cast(CursorResult[Any], result).rowcount != 1:
        raise Conflict("The ticket changed meanwhile; read it again and retry", field="status")
    s.refresh(ticket)


def _status_event(s: Session, ticket: Ticket, before: TicketStatus, after: TicketStatus, party: Party) -> None:
    events.record(
        s,
        EventType.TICKET_STATUS_CHANGED,
        account_id=ticket.account_id,
        target_type="ticket",
        target_id=ticket.id,
        data={"from": str(before), "to": str(after), "by": str(party)},
    )


def _insert_message(
    s: Session,
    ticket_id: int,
    author_user_id: int,
    party: Party,
    body: str,
    uploads: Sequence[_Upload],
    now: datetime,
) -> int:
    message = TicketMessage(
        ticket_id=ticket_id,
        author_user_id=author_user_id or None,
        is_staff=party is Party.STAFF,
        body=body,
        created_at=now,
    )
    s.add(message)
    s.flush()
    for upload in uploads:
        s.execute(
            insert(_attachments),
            {"ticket_id": ticket_id, "message_id": message.id, "filename": upload.filename,
             "content_type": upload.content_type, "size_bytes": len(upload.data),
             "sha256": hashlib.sha256(upload.data).hexdigest(), "data": upload.data, "created_at": now},
        )  # fmt: skip
    return message.id


def _view(ticket: Ticket, email: str | None) -> TicketView:
    return TicketView(
        id=ticket.id,
        account_id=ticket.account_id,
        user_id=ticket.user_id,
        user_email=email,
        subject=ticket.subject,
        status=ticket.status,
        priority=ticket.priority,
        category=ticket.category,
        server_id=ticket.server_id,
        assignee_user_id=ticket.assignee_user_id,
        message_count=ticket.message_count,
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
    )


_ATTACHMENT_COLUMNS = [c for c in _attachments.c if c.key != "data"]


def _detail(s: Session, ticket_id: int) -> TicketDetail:
    # populate_existing: the transaction may have changed the ticket with a Core UPDATE since it loaded it.
    ticket, email = s.execute(
        select(Ticket, User.email)
        .outerjoin(User, User.id == Ticket.user_id)
        .where(Ticket.id == ticket_id)
        .execution_options(populate_existing=True)
    ).one()
    files: dict[int, list[AttachmentView]] = {}
    for row in s.execute(
        select(*_ATTACHMENT_COLUMNS).where(_attachments.c.ticket_id == ticket_id).order_by(_attachments.c.id)
    ):
        files.setdefault(row.message_id, []).append(
            AttachmentView(row.id, row.ticket_id, row.message_id, row.filename, row.content_type, row.size_bytes,
                           row.sha256, row.created_at)
        )  # fmt: skip
    messages = tuple(
        MessageView(m.id, m.ticket_id, m.author_user_id, name, m.is_staff, m.body, m.created_at,
                    tuple(files.get(m.id, ())))
        for m, name in s.execute(
            select(TicketMessage, User.name)
            .outerjoin(User, User.id == TicketMessage.author_user_id)
            .where(TicketMessage.ticket_id == ticket_id)
            .order_by(TicketMessage.id)
        )
    )  # fmt: skip
    return TicketDetail(_view(ticket, email), messages)


def _user(s: Session, user_id: int | None) -> User | None:
    return s.get(User, user_id) if user_id else None


def _who(user: User | None) -> str:
    return f"{user.name} <{user.email}>" if user is not None else "A customer"


def _mail_owner(s: Session, settings: Settings, ticket: Ticket, subject: str, body: str) -> None:
    owner = _user(s, ticket.user_id)
    mail.enqueue(
        s,
        settings,
        to=owner.email if owner is not None else None,
        subject=f"[ticket-{ticket.id}] {subject}",
        body=body,
        topic=f"ticket-{ticket.id}",
    )


def _mail_staff(s: Session, settings: Settings, ticket: Ticket, subject: str, body: str) -> None:
    """To the admin the ticket is assigned to, or else the support address (CLOUDPLANE_SUPPORT_EMAIL)."""
    assignee = _user(s, ticket.assignee_user_id)
    mail.enqueue(
        s,
        settings,
        to=assignee.email if assignee is not None else settings.support_email,
        subject=f"[ticket-{ticket.id}] {subject}",
        body=body,
        topic=f"ticket-{ticket.id}",
    )
