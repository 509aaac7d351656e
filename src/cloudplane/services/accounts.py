"""Accounts, users and API keys: creation, the first-start bootstrap key, and resolving a bearer key."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from cachetools import TTLCache
from sqlalchemy import bindparam, func, select, update

from cloudplane.db.engine import Database
from cloudplane.db.tables import Account, ApiKey, User, utcnow
from cloudplane.domain.errors import Conflict, Forbidden, NotFound, Unauthorized
from cloudplane.domain.events import EventType
from cloudplane.services import events

API_KEY_PREFIX = "cp_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: every service call is scoped by `account_id`."""

    account_id: int
    user_id: int
    role: str
    tier: str = "free"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# The operator at the command line (`cloudplane admin ...`): an admin who is no user of the API.
OPERATOR = Principal(account_id=0, user_id=0, role="admin")


def hash_api_key(key: str) -> str:
    # API keys carry 256 bits of randomness, so a fast hash is enough (unlike passwords).
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(db: Database, *, email: str, name: str, role: str = "user", company: str | None = None) -> User:
    """Create a user with an account of its own."""
    email = email.strip().lower()
    with db.write() as s:
        if s.scalar(select(User.id).where(User.email == email)) is not None:
            raise Conflict(f"A user with email {email} already exists.", field="email")
        account = Account(name=name, email=email, company=company)
        s.add(account)
        s.flush()
        user = User(account_id=account.id, email=email, name=name, role=role)
        s.add(user)
        s.flush()
        return user


def create_api_key(db: Database, *, user_id: int, name: str = "default") -> tuple[ApiKey, str]:
    """Make a key for a user; the plain key is returned once and only its hash is stored."""
    plain = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with db.write() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("User not found", user_id=user_id)
        key = ApiKey(user_id=user_id, name=name, prefix=plain[:10], key_hash=hash_api_key(plain))
        s.add(key)
        s.flush()
        events.record(
            s,
            EventType.API_KEY_CREATED,
            account_id=user.account_id,
            target_type="api_key",
            target_id=key.id,
            data={"user_id": user_id, "name": name},
        )
        return key, plain


def find_user(db: Database, email: str) -> User:
    with db.read() as s:
        user = s.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"No user with email {email}", email=email)
    return user


def bootstrap_admin_key(db: Database) -> str | None:
    """On an empty database make an admin and return a one-time API key for them; otherwise None."""
    with db.read() as s:
        if s.scalar(select(func.count()).select_from(User)):
            return None
    try:
        user = create_user(db, email="admin@localhost", name="Administrator", role="admin")
    except Conflict:  # another process bootstrapped first
        return None
    _, plain = create_api_key(db, user_id=user.id, name="bootstrap")
    return plain


# Resolving a key is on every request; a verified key is trusted for this long before it is looked up again.
# Revoking a key in this process forgets it at once; other processes notice within the TTL.
KEY_CACHE_TTL_S = 10.0
_KEY_CACHE_MAX = 10_000


def _now() -> float:
    return time.monotonic()


# Key digest -> principal; the least recently used entry goes when it is full. Read on the event loop and
# written from the threadpool (authenticate_api_key), hence the lock.
_key_cache: TTLCache[str, Principal] = TTLCache(maxsize=_KEY_CACHE_MAX, ttl=KEY_CACHE_TTL_S, timer=lambda: _now())
_key_cache_lock = threading.Lock()
_KEY_LOOKUP = (
    select(
        ApiKey.id, ApiKey.last_used_at, User.id.label("user_id"), User.account_id, User.role, User.status, Account.tier
    )
    .join(User, User.id == ApiKey.user_id)
    .join(Account, Account.id == User.account_id)
    .where(ApiKey.key_hash == bindparam("digest"), ApiKey.revoked_at.is_(None))
)


def forget_api_key(digest: str) -> None:
    with _key_cache_lock:
        _key_cache.pop(digest, None)


def forget_user_keys(user_id: int) -> None:
    """Drop a user's cached keys, so a suspension or role change applies at once in this process."""
    with _key_cache_lock:
        for digest in [d for d, p in _key_cache.items() if p.user_id == user_id]:
            _key_cache.pop(digest, None)


def forget_account_keys(account_id: int) -> None:
    """Drop the cached keys of every user of an account, so a change of its tier applies at once in this process."""
    with _key_cache_lock:
        for digest in [d for d, p in _key_cache.items() if p.account_id == account_id]:
            _key_cache.pop(digest, None)


def cached_principal(key: str) -> Principal | None:
    """The principal of a recently verified key, without I/O; None means ask `authenticate_api_key`."""
    digest = hash_api_key(key)
    with _key_cache_lock:
        try:
            return _key_cache[digest]  # half the cost of TTLCache.get, which looks the key up twice
        except KeyError:
            return None


def authenticate_api_key(db: Database, key: str) -> Principal:
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        raise Unauthorized("Invalid API key")
    if (principal := cached_principal(key)) is not None:
        return principal
    digest = hash_api_key(key)
    with db.connect() as conn:
        row = conn.execute(_KEY_LOOKUP, {"digest": digest}).first()
    if row is None:
        forget_api_key(digest)
        raise Unauthorized("Invalid API key")
    if row.status != "active":
        raise Forbidden("This account is suspended; contact support", status=row.status)
    now = utcnow()
    # Record use at most once a minute, so reads do not turn into writes on every request.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        with db.write() as s:
            s.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    principal = Principal(account_id=row.account_id, user_id=row.user_id, role=row.role, tier=row.tier)
    with _key_cache_lock:
        _key_cache[digest] = principal
    return principal


def get_account(db: Database, principal: Principal) -> tuple[Account, User]:
    with db.read() as s:
        account = s.get(Account, principal.account_id)
        user = s.get(User, principal.user_id)
    if account is None or user is None:
        raise NotFound("Account not found")
    return account, user
