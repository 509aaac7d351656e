"""Mail through the operator's SMTP server (CLOUDPLANE_SMTP_*). A mail is written to the outbox in the transaction
of what it tells about and sent after the commit: at once (`kick`), and by a sweep in every process that retries
what failed and takes over what a dead process had claimed. At least once: a crash between the SMTP server's
acceptance and the row's update sends that mail again. Sending never fails the request that caused the mail."""

from __future__ import annotations

import asyncio
import logging
import random
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, cast

from sqlalchemy import CursorResult, insert, or_, select, update
from sqlalchemy.orm import Session

from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.db.tables import MailOutbox, table_of, utcnow

log = logging.getLogger(__name__)

# After this many failed attempts a mail is given up (failed_at set; it stays in the table for operators).
MAX_ATTEMPTS = 8
# A sender holds the mails it claimed this long; a process that died holding them loses them to another after it.
CLAIM_FOR = timedelta(minutes=2)
MAX_BACKOFF_S = 3600.0
BATCH = 50

_outbox = table_of(MailOutbox)
_tasks: set[asyncio.Task[int]] = set()


def configured(settings: Settings) -> bool:
    return bool(settings.smtp_host)


def enqueue(session: Session, settings: Settings, *, to: str | None, subject: str, body: str, topic: str) -> bool:
    """Add a mail to the session's transaction; nothing when mail is not configured or there is nobody to send to."""
    if not configured(settings) or not to:
        return False
    now = utcnow()
    # One line: a subject cannot carry a line break into the headers.
    subject = " ".join(subject.split())[:300]
    session.execute(
        insert(_outbox),
        {"recipient": to, "subject": subject, "body": body, "topic": topic, "attempts": 0, "next_attempt_at": now,
         "created_at": now},
    )  # fmt: skip
    return True


@dataclass(frozen=True)
class Claimed:
    id: int
    recipient: str
    subject: str
    body: str
    attempts: int


_UNSENT = (_outbox.c.sent_at.is_(None), _outbox.c.failed_at.is_(None))


def claim_due(core: Core, now: datetime, limit: int = BATCH) -> list[Claimed]:
    """The mails due now, each claimed by one conditional UPDATE, so two senders never take the same one."""
    free = or_(_outbox.c.claimed_until.is_(None), _outbox.c.claimed_until < now)
    claimed: list[Claimed] = []
    with core.db.write() as s:
        due = s.execute(
            select(_outbox.c.id, _outbox.c.recipient, _outbox.c.subject, _outbox.c.body, _outbox.c.attempts)
            .where(*_UNSENT, _outbox.c.next_attempt_at <= now, free)
            .order_by(_outbox.c.next_attempt_at, _outbox.c.id)
            .limit(limit)
        ).all()
        for row in due:
            taken = s.execute(
                update(_outbox)
                .where(_outbox.c.id == row.id, *_UNSENT, free)
                .values(claimed_until=now + CLAIM_FOR, attempts=_outbox.c.attempts + 1)
            )
            if cast(CursorResult[Any], taken).rowcount == 1:
                claimed.append(Claimed(row.id, row.recipient, row.subject, row.body, row.attempts + 1))
    return claimed


def smtp_check(settings: Settings, timeout_s: float) -> None:
    """Raise unless the SMTP server answers a conversation now: connect, EHLO (and STARTTLS when configured), NOOP,
    each within `timeout_s` (blocking: run it in a thread). Nothing is sent and no one is signed in."""
    assert settings.smtp_host
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout_s) as smtp:
        smtp.ehlo()
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        code, reply = smtp.noop()
        if code != 250:
            raise smtplib.SMTPResponseException(code, reply)


def smtp_send(settings: Settings, mail: Claimed) -> None:
    """One SMTP conversation (blocking: run it in a thread). Raises OSError or smtplib.SMTPException."""
    assert settings.smtp_host
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = mail.recipient
    message["Subject"] = mail.subject
    message["Date"] = formatdate(usegmt=True)
    # The sender's domain, not make_msgid's default: that asks DNS for this host's name on every mail.
    message["Message-ID"] = make_msgid(idstring=f"mail-{mail.id}", domain=settings.smtp_from.rpartition("@")[2])
    message.set_content(mail.body)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(message)


def settle(core: Core, mail: Claimed, error: str | None, now: datetime) -> None:
    """Record a sending's outcome: sent, or tried again later (backoff with jitter), or given up."""
    if error is None:
        values: dict[str, object] = {"sent_at": now, "claimed_until": None, "last_error": None}
    elif mail.attempts >= MAX_ATTEMPTS:
        values = {"failed_at": now, "claimed_until": None, "last_error": error}
    else:
        backoff = min(MAX_BACKOFF_S, core.settings.mail_retry_interval_s * 2 ** (mail.attempts - 1))
        retry_at = now + timedelta(seconds=backoff * random.uniform(0.8, 1.2))
        values = {"next_attempt_at": retry_at, "claimed_until": None, "last_error": error}
    with core.db.write() as s:
        s.execute(update(_outbox).where(_outbox.c.id == mail.id).values(**values))


async def deliver_due(core: Core, now: datetime | None = None) -> int:
    """Send the mails due (`now`: a test's clock); returns how many were sent. SMTP failures are logged and
    recorded on the mail, never raised."""
    if not configured(core.settings):
        return 0
    sent = 0
    for mail in await asyncio.to_thread(claim_due, core, now or utcnow()):
        try:
            await asyncio.to_thread(smtp_send, core.settings, mail)
            error = None
            sent += 1
        except (OSError, smtplib.SMTPException) as failure:
            error = f"{type(failure).__name__}: {failure}"
            log.warning("mail %s to %s not sent (attempt %s): %s", mail.id, mail.recipient, mail.attempts, error)
        await asyncio.to_thread(settle, core, mail, error, utcnow())
    return sent


def kick(core: Core) -> None:
    """Send what is due now, in the background: call after committing a transaction that enqueued mail."""
    if not configured(core.settings):
        return
    task = asyncio.get_running_loop().create_task(deliver_due(core), name="cloudplane-mail")
    _tasks.add(task)
    task.add_done_callback(_done)


def _done(task: asyncio.Task[int]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("mail delivery failed", exc_info=task.exception())


async def drain() -> None:
    """Wait for the deliveries kicked so far (tests, shutdown)."""
    while _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)


async def send_periodically(core: Core) -> None:
    while True:
        await asyncio.sleep(core.settings.mail_retry_interval_s)
        try:
            await deliver_due(core)
        except Exception:  # noqa: BLE001 - the sweep outlives a bad pass (the database away for a moment)
            log.exception("mail sweep failed")


def start_mail_sender(core: Core) -> asyncio.Task[None] | None:
    """The sweep, as a task of this process's loop, when mail is configured."""
    if not configured(core.settings):
        return None
    return asyncio.create_task(send_periodically(core), name="cloudplane-mail-sweep")
