"""Sign-in: argon2id passwords, JWT access and refresh tokens (RFC 8725), rotating refresh families.

Access tokens live an hour and carry the session id (`sid`, the refresh family); refresh tokens are single use:
each refresh replaces the token, and presenting one already used revokes its whole family, as a stolen copy is
the only way that happens. Logout revokes the session, a password change every session of the user.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cachetools import TTLCache
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from cloudplane.config import get_settings
from cloudplane.db.engine import Database
from cloudplane.db.tables import Account, RefreshToken, SystemSecret, User, utcnow
from cloudplane.domain.errors import Conflict, Forbidden, Unauthorized, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.ids import parse_id
from cloudplane.services import events
from cloudplane.services.accounts import Principal

ISSUER = "cloudplane"
AUDIENCE = "cloudplane-api"
ALGORITHM = "HS256"
ACCESS_TTL_S = 3600
REFRESH_TTL_S = 30 * 24 * 3600
MIN_PASSWORD, MAX_PASSWORD = 8, 128
USERNAME = re.compile(r"^[a-zA-Z0-9_.-]{3,32}$")
# ASCII addresses only: every regex engine (ours, pydantic's, a client's) then agrees on what matches.
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
# OWASP password storage: argon2id, m >= 19 MiB, t >= 2, p = 1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Compared against when the user does not exist, so an unknown email costs as long as a wrong password.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))
INVALID_LOGIN = "Invalid email/username or password"


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


_signing_keys: dict[str, str] = {}


def signing_key(db: Database) -> str:
    """The JWT key: CLOUDPLANE_SECRET_KEY if set, else one made on first use and kept in the database, so every
    process shares it and tokens survive restarts. Read once per process."""
    key = _signing_keys.get(db.url)
    if key is None:
        key = _signing_keys[db.url] = get_settings().secret_key or _stored_signing_key(db)
    return key


def _stored_signing_key(db: Database) -> str:
    with db.read() as s:
        existing = s.get(SystemSecret, "jwt_signing_key")
    if existing is not None:
        return existing.value
    try:
        with db.write() as s:
            s.add(SystemSecret(name="jwt_signing_key", value=secrets.token_urlsafe(48)))
    except IntegrityError:
        pass  # another process made it first
    with db.read() as s:
        return s.get(SystemSecret, "jwt_signing_key").value  # type: ignore[union-attr]


def validate_password(password: str, field: str = "password") -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValidationFailed(f"Password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long", field=field)


def hash_password(password: str) -> str:
    validate_password(password)
    return HASHER.hash(password)


def register(db: Database, *, email: str, password: str, name: str | None = None, username: str | None = None) -> User:
    """A new user with an account of its own (tier free)."""
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise ValidationFailed("Email address is not valid", field="email")
    if username is not None and not USERNAME.match(username):
        raise ValidationFailed("Username must be 3-32 letters, digits, dots, dashes or underscores", field="username")
    password_hash = hash_password(password)
    display = (name or username or email.split("@")[0]).strip()[:200] or email
    try:
        with db.write() as s:
            clash = s.scalar(
                select(User.email).where(
                    or_(User.email == email, User.username == username) if username else User.email == email
                )
            )
            if clash is not None:
                field = "email" if clash == email else "username"
                raise Conflict(f"That {field} is already registered", field=field)
            account = Account(name=display, email=email)
            s.add(account)
            s.flush()
            user = User(
                account_id=account.id, email=email, username=username, name=display, password_hash=password_hash
            )
            s.add(user)
            s.flush()
            events.record(
                s,
                EventType.USER_REGISTERED,
                account_id=account.id,
                target_type="user",
                target_id=user.id,
                actor_user_id=user.id,
                data={"email": email},
            )
            return user
    except IntegrityError:
        raise Conflict("That email or username is already registered", field="email") from None


def _find_login_user(db: Database, login: str) -> User | None:
    login = login.strip()
    if "\x00" in login:  # no account has one (PostgreSQL text cannot even hold it): unknown, like any other
        return None
    with db.read() as s:
        return s.scalar(select(User).where(or_(User.email == login.lower(), User.username == login)))


def login_subject(db: Database, login: str) -> str:
    """What failed sign-ins with `login` count against: the account it names (by email or username, whatever the
    case of an email), or, for a name no account has, the name itself, so unknown names are limited alike."""
    user = _find_login_user(db, login) if len(login) <= 320 else None
    return f"user:{user.id}" if user is not None else f"name:{login.strip().lower()}"


def authenticate_password(db: Database, login: str, password: str) -> User:
    """The user whose email or username and password these are; the same error whichever part is wrong."""
    if len(password) > MAX_PASSWORD * 4 or len(login) > 320:
        raise Unauthorized(INVALID_LOGIN)
    user = _find_login_user(db, login)
    if user is None or user.password_hash is None:
        try:
            HASHER.verify(_DUMMY_HASH, password)
        except VerificationError:
            pass
        raise Unauthorized(INVALID_LOGIN)
    try:
        HASHER.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise Unauthorized(INVALID_LOGIN) from None
    if user.status != "active":
        raise Forbidden("This account is suspended; contact support", status=user.status)
    if HASHER.check_needs_rehash(user.password_hash):
        with db.write() as s:
            s.execute(update(User).where(User.id == user.id).values(password_hash=HASHER.hash(password)))
    return user


def _encode(db: Database, claims: dict, ttl_s: int) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + ttl_s, **claims}
    return jwt.encode(payload, signing_key(db), algorithm=ALGORITHM)


def _decode(db: Database, token: str, expected_type: str) -> dict:
    try:
        claims = jwt.decode(
            token,
            signing_key(db),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "typ", "jti", "sid"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token expired; sign in again or refresh it") from None
    except jwt.PyJWTError:
        raise Unauthorized("Invalid token") from None
    if claims.get("typ") != expected_type:
        raise Unauthorized(f"Invalid token: expected an {expected_type} token")
    # Only this service signs tokens, yet a claim is checked before use: `sub` must be a user id ...
    if not isinstance(claims["sub"], str) or parse_id(claims["sub"]) is None or not isinstance(claims["sid"], str):
        raise Unauthorized("Invalid token")
    return claims


def _issue(db: Database, user: User, family_id: str, *, superseding: bool = False) -> Tokens:
    """A new token pair of the session `family_id`. `superseding`: the session's refresh tokens not used yet are
    revoked in the same transaction (the pair replaces them: refreshing with the access token)."""
    refresh_id = str(uuid.uuid4())
    with db.write() as s:
        if superseding:
            s.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.family_id == family_id,
                    RefreshToken.user_id == user.id,
                    RefreshToken.revoked_at.is_(None),
                    RefreshToken.used_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        s.add(
            RefreshToken(
                id=refresh_id,
                user_id=user.id,
                family_id=family_id,
                expires_at=utcnow() + timedelta(seconds=REFRESH_TTL_S),
            )
        )
    sub = str(user.id)
    access = _encode(db, {"sub": sub, "typ": "access", "jti": str(uuid.uuid4()), "sid": family_id}, ACCESS_TTL_S)
    refresh = _encode(db, {"sub": sub, "typ": "refresh", "jti": refresh_id, "sid": family_id}, REFRESH_TTL_S)
    return Tokens(access_token=access, refresh_token=refresh, expires_in=ACCESS_TTL_S, user=user)


def login(db: Database, login: str, password: str) -> Tokens:
    """Verify the password and open a new session."""
    user = authenticate_password(db, login, password)
    return _issue(db, user, family_id=str(uuid.uuid4()))


def refresh(db: Database, refresh_token: str) -> Tokens:
    """Swap a refresh token for a new pair. A token used twice revokes its family: a stolen copy is in play."""
    claims = _decode(db, refresh_token, "refresh")
    now = utcnow()
    with db.write() as s:
        token = s.get(RefreshToken, claims["jti"])
        if token is None or token.revoked_at is not None or token.expires_at <= now:
            raise Unauthorized("Refresh token revoked or expired; sign in again")
        if str(token.user_id) != claims["sub"] or token.family_id != claims["sid"]:
            raise Unauthorized("Invalid token")
        if token.used_at is not None:
            s.execute(update(RefreshToken).where(RefreshToken.family_id == token.family_id).values(revoked_at=now))
            forget_session(token.family_id)
            reuse = Unauthorized("Refresh token already used; every session token of this sign-in is now revoked")
        else:
            reuse = None
            s.execute(update(RefreshToken).where(RefreshToken.id == token.id).values(used_at=now))
        user = s.get(User, token.user_id)
        family_id = token.family_id
    if reuse is not None:
        raise reuse
    if user is None or user.status != "active":
        raise Unauthorized("User is not active")
    return _issue(db, user, family_id)


def refresh_session(db: Database, access_token: str) -> Tokens:
    """A new pair for the session of a valid access token, as both API documents show refresh (`POST /auth/refresh`
    with `Authorization: Bearer {token}` and no body). The session's unused refresh token is revoked by the new one,
    so a session never holds two; an expired access token is refused (its refresh token is the way back then)."""
    principal = authenticate_access_token(db, access_token)  # valid, unexpired, its session live, its user active
    claims = _decode(db, access_token, "access")
    with db.read() as s:
        user = s.get(User, principal.user_id)
    if user is None:
        raise Unauthorized("User is not active")
    return _issue(db, user, claims["sid"], superseding=True)


def token_type(token: str) -> str | None:
    """The `typ` a JWT says it is (access or refresh), unverified: only to pick which check verifies it."""
    try:
        typ = jwt.decode(token, options={"verify_signature": False}).get("typ")
    except jwt.PyJWTError:
        return None
    return typ if isinstance(typ, str) else None


def revoke_session(db: Database, family_id: str, user_id: int) -> None:
    with db.write() as s:
        s.execute(
            update(RefreshToken)
            .where(
                RefreshToken.family_id == family_id, RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
            )
            .values(revoked_at=utcnow())
        )
    forget_session(family_id)


def logout(db: Database, access_token: str | None = None, refresh_token: str | None = None) -> None:
    """End the session of either token (an access token's `sid` is its session)."""
    if refresh_token:
        claims = _decode(db, refresh_token, "refresh")
    elif access_token:
        claims = _decode(db, access_token, "access")
    else:
        raise Unauthorized("Send the access token (Authorization header) or a refresh_token to sign out")
    revoke_session(db, claims["sid"], int(claims["sub"]))


def change_password(db: Database, principal: Principal, current_password: str, new_password: str) -> int:
    """Set a new password and revoke every session of the user; API keys stay (revoke them separately). Returns how
    many sessions ended."""
    validate_password(new_password, "new_password")
    with db.read() as s:
        user = s.get(User, principal.user_id)
    if user is None or user.password_hash is None:
        raise Unauthorized("No password is set for this user")
    try:
        HASHER.verify(user.password_hash, current_password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise ValidationFailed("Current password is wrong", field="current_password") from None
    now = utcnow()
    with db.write() as s:
        s.execute(
            update(User)
            .where(User.id == user.id)
            .values(password_hash=HASHER.hash(new_password), password_changed_at=now)
        )
        families = s.scalars(
            select(RefreshToken.family_id).where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        ).all()
        s.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    for family in set(families):
        forget_session(family)
    return len(set(families))


# A verified session is trusted for this long before its revocation is checked again (like API keys); a
# revocation in this process forgets it at once.
SESSION_CACHE_TTL_S = 10.0
_ACTIVE_SESSION = (
    select(User.id, User.account_id, User.role, User.status, Account.tier)
    .join(Account, Account.id == User.account_id)
    .where(
        User.id == bindparam("user_id"),
        # ... and the session its `sid` names must be that user's.
        select(func.count())
        .select_from(RefreshToken)
        .where(
            RefreshToken.family_id == bindparam("sid"),
            RefreshToken.user_id == bindparam("user_id"),
            RefreshToken.revoked_at.is_(None),
        )
        .scalar_subquery()
        > 0,
    )
)
# Verified sessions, for SESSION_CACHE_TTL_S: read on the event loop, written from the threadpool, so locked;
# full, it drops the least recently used entry.
_principal_cache: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=SESSION_CACHE_TTL_S, timer=time.monotonic)
_principal_cache_lock = threading.Lock()


def forget_session(family_id: str) -> None:
    with _principal_cache_lock:
        for cache_key in [k for k in _principal_cache if k.endswith(f":{family_id}")]:
            _principal_cache.pop(cache_key, None)


def forget_user_sessions(user_id: int) -> None:
    with _principal_cache_lock:
        for cache_key in [k for k, p in _principal_cache.items() if p.user_id == user_id]:
            _principal_cache.pop(cache_key, None)


def forget_account_sessions(account_id: int) -> None:
    with _principal_cache_lock:
        for cache_key in [k for k, p in _principal_cache.items() if p.account_id == account_id]:
            _principal_cache.pop(cache_key, None)


def _cached(cache_key: str) -> Principal | None:
    with _principal_cache_lock:
        try:
            return _principal_cache[cache_key]  # half the cost of TTLCache.get, which looks the key up twice
        except KeyError:
            return None


def cached_access_principal(db: Database, token: str) -> Principal | None:
    """The principal of a recently verified access token (CPU only: signature and claims); None if unknown."""
    return _cached(_cache_key(_decode(db, token, "access")))


def _cache_key(claims: dict) -> str:
    # Every claim the principal depends on; the session id last, as forget_session matches on it.
    return f"{claims['jti']}:{claims['sub']}:{claims['sid']}"


def authenticate_access_token(db: Database, token: str) -> Principal:
    claims = _decode(db, token, "access")
    cache_key = _cache_key(claims)
    if (cached := _cached(cache_key)) is not None:
        return cached
    with db.connect() as conn:
        row = conn.execute(_ACTIVE_SESSION, {"user_id": int(claims["sub"]), "sid": claims["sid"]}).first()
    if row is None:
        raise Unauthorized("Session ended (signed out or password changed); sign in again")
    if row.status != "active":
        raise Forbidden("This account is suspended; contact support", status=row.status)
    principal = Principal(account_id=row.account_id, user_id=row.id, role=row.role, tier=row.tier)
    with _principal_cache_lock:
        _principal_cache[cache_key] = principal
    return principal


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")
