"""`Idempotency-Key` on POST: the first request with a key runs and its reply is stored per account; a retry with
the same key and request gets that reply again, a different request with the key is refused.

Creation replies carry secrets (an API key, a root password), so the store cannot read what it keeps: a reply is
sealed with AES-GCM under a key derived (HKDF) from the client's Idempotency-Key, the account and the request,
and a row holds only a hash of the Idempotency-Key and an HMAC of the request. Only a client presenting the key
with the same request again can open the reply; the database alone cannot, as long as keys are unguessable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudplane.api.common.deps import principal_from_token, request_credential
from cloudplane.api.common.faces import render_error
from cloudplane.db.engine import Database
from cloudplane.db.tables import IdempotencyRecord, utcnow
from cloudplane.domain.errors import CloudplaneError, Conflict, Unauthorized, ValidationFailed

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Each claim deletes at most this many expired rows (of any account), so cleanup keeps pace without a sweeper
# and no request pays for a large backlog.
PURGE_BATCH = 100
CLAIM_ATTEMPTS = 5
# Replies that tell the caller to retry or to authenticate again are not stored: replaying them for a day would
# force a new key, which is the duplicate the key exists to prevent.
UNSTORED_STATUSES = frozenset({401, 408, 409, 425, 429})
# Per-connection, per-moment or per-response headers that must not be replayed (the replay computes its own length).
UNSTORED_HEADERS = frozenset(
    {"content-length", "date", "server", "connection", "keep-alive", "transfer-encoding", "set-cookie", "retry-after"}
)
UNSTORED_HEADER_PREFIXES = ("x-ratelimit-",)


@dataclass(frozen=True)
class Claimed:
    record_id: int


@dataclass(frozen=True)
class Stored:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class InFlight:
    pass


class Mismatch:
    pass


Outcome = Claimed | Stored | InFlight | Mismatch


class _Retry(Exception):
    """The row changed under us between reading and writing; claim again in a fresh transaction."""


def valid_key(values: list[bytes]) -> str | None:
    """The key if the header is present once with 1-255 visible ASCII characters, else None."""
    if len(values) != 1:
        return None
    raw = values[0]
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or any(b < 0x21 or b > 0x7E for b in raw):
        return None
    return raw.decode("ascii")


def fingerprint(scope: Scope, body: bytes) -> str:
    digest = hashlib.sha256()
    # Separators keep (path "/a", query "b") apart from (path "/ab", query "").
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b"")):
        digest.update(part)
        digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


NONCE_BYTES = 12


def key_hash(account_id: int, key: str) -> str:
    """How a row names its Idempotency-Key: the key itself is never stored."""
    return hashlib.sha256(f"cloudplane idempotency key\0{account_id}\0{key}".encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Sealer:
    """What one (account, key, request) stores under: the key's lookup hash, the request's HMAC, the reply's AEAD.
    Derived from the Idempotency-Key itself, so none of it can be recomputed from a row."""

    account_id: int
    key_hash: str
    fingerprint: str
    aead: AESGCM

    @classmethod
    def derive(cls, account_id: int, key: str, request_digest: str) -> Sealer:
        secret, account = key.encode("ascii"), str(account_id).encode()

        def subkey(purpose: bytes) -> bytes:
            info = b"cloudplane idempotency " + purpose + b"\0" + account
            salt = bytes.fromhex(request_digest)
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)

        # An HMAC, not the request's plain digest: a body holding a chosen password must not be guessable from it.
        fingerprint = hmac.new(subkey(b"fingerprint"), bytes.fromhex(request_digest), hashlib.sha256).hexdigest()
        return cls(account_id, key_hash(account_id, key), fingerprint, AESGCM(subkey(b"reply")))

    def seal(self, headers: list[tuple[str, str]], body: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        # JSON escapes newlines, so the first one ends the headers.
        plain = json.dumps(headers).encode() + b"\n" + body
        return nonce + self.aead.encrypt(nonce, plain, self.key_hash.encode())

    def open(self, sealed: bytes) -> tuple[list[tuple[str, str]], bytes] | None:
        try:
            plain = self.aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self.key_hash.encode())
        except (InvalidTag, ValueError):
            return None
        headers, _, body = plain.partition(b"\n")
        return [(str(k), str(v)) for k, v in json.loads(headers)], body


def claim(db: Database, sealer: Sealer, *, in_flight_for: timedelta) -> Outcome:
    """Take the key for this request, or say why not (stored reply, in flight, used for another request)."""
    for _ in range(CLAIM_ATTEMPTS - 1):
        try:
            return _claim_once(db, sealer, in_flight_for)
        except (IntegrityError, _Retry):
            # A concurrent request inserted or replaced the same key first; the next look sees its row.
            continue
    return _claim_once(db, sealer, in_flight_for)


def _claim_once(db: Database, sealer: Sealer, in_flight_for: timedelta) -> Outcome:
    account_id, key_hash, digest = sealer.account_id, sealer.key_hash, sealer.fingerprint
    now = utcnow()
    table = IdempotencyRecord
    with db.write() as s:
        # SKIP LOCKED (PostgreSQL; SQLite serializes writers anyway): two claims purging overlapping rows in a
        # different order would otherwise deadlock.
        expired = select(table.id).where(table.expires_at <= now).limit(PURGE_BATCH).with_for_update(skip_locked=True)
        s.execute(delete(table).where(table.id.in_(expired)), execution_options={"synchronize_session": False})
        row = s.execute(
            select(table).where(table.account_id == account_id, table.key_hash == key_hash)
        ).scalar_one_or_none()
        if row is not None and row.expires_at <= now:
            # Conditional, so that of two requests replacing the same expired row only one goes on to insert.
            gone = s.execute(
                delete(table).where(table.id == row.id, table.expires_at <= now),
                execution_options={"synchronize_session": False},
            )
            # A DELETE returns a CursorResult; Session.execute is typed as returning the base Result.
            if cast(CursorResult[Any], gone).rowcount != 1:
                raise _Retry
            s.expunge(row)
            row = None
        if row is None:
            record = IdempotencyRecord(
                account_id=account_id,
                key_hash=key_hash,
                fingerprint=digest,
                status="in_flight",
                created_at=now,
                expires_at=now + in_flight_for,
            )
            s.add(record)
            s.flush()
            return Claimed(record.id)
        if row.fingerprint != digest:
            return Mismatch()
        if row.status != "done":
            return InFlight()
        opened = sealer.open(bytes(row.response_sealed or b""))
        if opened is None:
            # Same key hash and request HMAC yet the seal does not open: only a damaged row does that.
            raise RuntimeError(f"idempotency record {row.id} cannot be opened")
        return Stored(int(row.response_status or 200), *opened)


def store(
    db: Database,
    record_id: int,
    sealer: Sealer,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    ttl: timedelta,
) -> None:
    with db.write() as s:
        s.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == record_id, IdempotencyRecord.status == "in_flight")
            .values(
                status="done",
                response_status=status,
                response_sealed=sealer.seal(headers, body),
                expires_at=utcnow() + ttl,
            )
        )


def release(db: Database, record_id: int) -> None:
    with db.write() as s:
        s.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id, IdempotencyRecord.status == "in_flight")
        )


def _kept_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    kept = []
    for name, value in raw:
        lower = name.decode("latin-1").lower()
        if lower in UNSTORED_HEADERS or lower.startswith(UNSTORED_HEADER_PREFIXES):
            continue
        kept.append((lower, value.decode("latin-1")))
    return kept


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (the body-limit middleware outside caps it), or None if the client went away."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class IdempotencyMiddleware:
    """Pure ASGI middleware for POST requests carrying `Idempotency-Key`; everything else passes through."""

    def __init__(self, app: ASGIApp, ttl_hours: float = 24, in_flight_timeout_s: float = 120) -> None:
        self.app = app
        self.ttl = timedelta(hours=ttl_hours)
        # A claim whose process died (or whose reply could not be stored) blocks retries only this long.
        self.in_flight_for = timedelta(seconds=in_flight_timeout_s)

    def _core(self, scope: Scope) -> Any:
        core = getattr(getattr(scope.get("app"), "state", None), "core", None)
        # Wrapped around the FastAPI app rather than added to it, scope["app"] is not set yet: look down the chain.
        inner: Any = self.app
        while core is None and inner is not None:
            core = getattr(getattr(inner, "state", None), "core", None)
            inner = getattr(inner, "app", None)
        if core is None:
            raise RuntimeError("IdempotencyMiddleware needs the Core on app.state.core")
        return core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope["headers"] if k == b"idempotency-key"]
        if not values:
            await self.app(scope, receive, send)
            return
        core = self._core(scope)
        credential = request_credential(Headers(scope=scope))
        try:
            if credential is None:
                raise Unauthorized("No credentials")
            principal = await principal_from_token(core, credential)
        except CloudplaneError:
            # The route answers 401 in its own words; nothing is claimed for an unknown caller.
            await self.app(scope, receive, send)
            return
        key = valid_key(values)
        if key is None:
            message = f"must be sent once, with 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            error = ValidationFailed(f"Invalid {HEADER} header: it {message}", field=HEADER, message=message)
            await render_error(scope, error)(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return
        sealer = Sealer.derive(principal.account_id, key, fingerprint(scope, body))
        outcome = await run_in_threadpool(claim, core.db, sealer, in_flight_for=self.in_flight_for)
        if isinstance(outcome, Mismatch):
            message = "was already used with a different request"
            error = ValidationFailed(
                f"This {HEADER} {message}; send a new key for a new request", field=HEADER, message=message
            )
            await render_error(scope, error)(scope, receive, send)
        elif isinstance(outcome, InFlight):
            busy = Conflict(f"A request with this {HEADER} is still being processed; retry later")
            busy.headers["Retry-After"] = "1"
            await render_error(scope, busy)(scope, receive, send)
        elif isinstance(outcome, Stored):
            await self._replay(outcome, send)
        else:
            await self._run(scope, receive, send, body, core.db, outcome.record_id, sealer)

    async def _replay(self, stored: Stored, send: Send) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
        headers += [(b"content-length", str(len(stored.body)).encode()), (b"idempotent-replayed", b"true")]
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body, "more_body": False})

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, db: Database, record_id: int, sealer: Sealer
    ) -> None:
        body_given = False
        status = 0
        raw_headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        settled = False

        async def replay_receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def settle(complete: bool) -> None:
            nonlocal settled
            settled = True
            try:
                if complete and status < 500 and status not in UNSTORED_STATUSES:
                    reply = b"".join(chunks)
                    kept = _kept_headers(raw_headers)
                    await run_in_threadpool(store, db, record_id, sealer, status, kept, reply, self.ttl)
                else:
                    await run_in_threadpool(release, db, record_id)
            except Exception:  # noqa: BLE001 - the reply still goes out; the claim then lapses after its timeout
                log.exception("idempotency: could not settle claim %s", record_id)

        async def capturing_send(message: Message) -> None:
            nonlocal status, raw_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                raw_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body" and not settled:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    # Stored before the last bytes leave, so a caller who has the reply can replay it at once.
                    await settle(complete=True)
            await send(message)

        try:
            await self.app(scope, replay_receive, capturing_send)
        # Not BaseException: a cancelled request (shutdown) may still finish in its worker thread, so its claim is
        # left to lapse after the in-flight timeout rather than freed for a retry that would run it twice.
        except Exception:
            if not settled:
                await settle(complete=False)
            raise
        if not settled:
            # The app ended without a complete reply we could capture; let a retry run again.
            await settle(complete=False)
