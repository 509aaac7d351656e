"""Consoles: an owner opens one on a running server and gets a page's address and a one-time password; the page's
WebSocket (api/console.py) redeems the password, once and before it expires, for a terminal on the machine."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from cloudplane.core import Core
from cloudplane.db.tables import ConsoleSession, Server, utcnow
from cloudplane.domain.errors import InvalidState, Unauthorized
from cloudplane.domain.events import EventType
from cloudplane.domain.states import ServerStatus
from cloudplane.providers.base import Feature
from cloudplane.services import events
from cloudplane.services.accounts import Principal
from cloudplane.services.servers import get_server_in, require_capability

# How long a console's password may be used (the document's example: an hour).
LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class Ticket:
    session_id: str
    url: str
    password: str  # shown once, in the reply that opened it
    expires_at: datetime


@dataclass(frozen=True)
class Redeemed:
    """What a redeemed session opens a terminal on."""

    server_id: int
    account_id: int
    provider: str
    ref: str


def _hash(password: str) -> str:
    # The password carries 128 random bits: a fast hash is enough (as for API keys).
    return hashlib.sha256(password.encode()).hexdigest()


def open_console(core: Core, principal: Principal, server_id: int) -> Ticket:
    """A console session on the caller's running server: the page's address and its one-time password."""
    with core.db.write() as s:
        require_capability(core, s, principal, server_id, Feature.CONSOLE)
        server = get_server_in(core, s, principal, server_id)
        if server.status != ServerStatus.RUNNING or server.task_state is not None:
            raise InvalidState(
                f"A console needs the server running (it is {server.words.state}); start it and try again.",
                server_id=server_id,
                status=server.words.state,
            )
        session_id, password = str(uuid.uuid4()), secrets.token_urlsafe(16)
        expires_at = utcnow() + LIFETIME
        s.add(
            ConsoleSession(
                id=session_id,
                account_id=principal.account_id,
                server_id=server_id,
                password_hash=_hash(password),
                expires_at=expires_at,
            )
        )
        s.flush()
        events.record(
            s,
            EventType.VPS_CONSOLE_OPENED,
            account_id=principal.account_id,
            target_type="server",
            target_id=server_id,
            data={"console_session": session_id, "expires_at": expires_at.isoformat()},
        )
    return Ticket(session_id, f"{core.settings.base_url()}/console/{session_id}", password, expires_at)


def redeem(core: Core, session_id: str, password: str) -> Redeemed:
    """Use the session's password: once, before it expires, while the server runs. Any failure says only that
    the console cannot be opened (the same for a wrong id, a wrong password, a used or expired one)."""
    refused = Unauthorized("This console's password is wrong, used already or expired; open a new console.")
    now = utcnow()
    with core.db.write() as s:
        # One conditional UPDATE: of two pages racing with the right password, one wins.
        used = s.execute(
            update(ConsoleSession)
            .where(
                ConsoleSession.id == session_id,
                ConsoleSession.used_at.is_(None),
                ConsoleSession.expires_at > now,
                ConsoleSession.password_hash == _hash(password),
            )
            .values(used_at=now)
        )
        if cast(CursorResult[Any], used).rowcount != 1:
            raise refused
        server = s.execute(
            select(Server.id, Server.account_id, Server.provider, Server.provider_ref, Server.status)
            .join(ConsoleSession, ConsoleSession.server_id == Server.id)
            .where(ConsoleSession.id == session_id, Server.deleted_at.is_(None), Server.suspended_at.is_(None))
        ).first()
        if server is None or server.provider_ref is None or server.status != ServerStatus.RUNNING:
            raise InvalidState("The server is no longer running; start it and open a new console.")
    return Redeemed(server.id, server.account_id, server.provider, server.provider_ref)
