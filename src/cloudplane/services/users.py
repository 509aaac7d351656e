"""Users: profile reads and edits, API keys of one's own, and what admins do to other users."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from cloudplane.db.engine import Database
from cloudplane.db.tables import Account, ApiKey, Subscription, User, utcnow
from cloudplane.domain.errors import Conflict, Forbidden, NotFound, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.tiers import TIERS
from cloudplane.services import events, operations, suspension
from cloudplane.services.accounts import Principal, forget_account_keys, forget_api_key, forget_user_keys
from cloudplane.services.auth import EMAIL, USERNAME, forget_account_sessions, forget_user_sessions
from cloudplane.services.pages import counted, paged_window, window

ROLES = ("user", "admin")


@dataclass(frozen=True)
class UserView:
    user: User
    account: Account


def get_user(db: Database, principal: Principal) -> UserView:
    return view_of(db, principal.user_id)


def view_of(db: Database, user_id: int) -> UserView:
    with db.read() as s:
        user = s.get(User, user_id)
        account = s.get(Account, user.account_id) if user else None
    if user is None or account is None:
        raise NotFound("User not found", user_id=user_id)
    return UserView(user, account)


def update_profile(
    db: Database,
    principal: Principal,
    *,
    name: str | None = None,
    email: str | None = None,
    username: str | None = None,
) -> UserView:
    _edit(db, principal.user_id, principal.account_id, name=name, email=email, username=username)
    return get_user(db, principal)


def _edit(
    db: Database,
    user_id: int,
    account_id: int,
    *,
    name: str | None = None,
    email: str | None = None,
    username: str | None = None,
    role: str | None = None,
) -> None:
    """Change what is given of a user's profile (and role), each value checked first."""
    values: dict[str, str] = {}
    if name is not None:
        if not name.strip():
            raise ValidationFailed("Name must not be empty", field="name")
        values["name"] = name.strip()[:200]
    if email is not None:
        email = email.strip().lower()
        if not EMAIL.match(email):
            raise ValidationFailed("Email address is not valid", field="email")
        values["email"] = email
    if username is not None:
        if not USERNAME.match(username):
            raise ValidationFailed(
                "Username must be 3-32 letters, digits, dots, dashes or underscores", field="username"
            )
        values["username"] = username
    if role is not None:
        if role not in ROLES:
            raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}", field="role")
        values["role"] = role
    if not values:
        return
    try:
        with db.write() as s:
            s.execute(update(User).where(User.id == user_id).values(**values))
            if "name" in values or "email" in values:
                account_values = {k: v for k, v in values.items() if k in ("name", "email")}
                s.execute(update(Account).where(Account.id == account_id).values(**account_values))
            events.record(
                s,
                EventType.USER_UPDATED,
                account_id=account_id,
                target_type="user",
                target_id=user_id,
                data={"fields": sorted(values)},
            )
    except IntegrityError:
        field = "email" if "email" in values else "username"
        raise Conflict(f"That {field} is already taken", field=field) from None


def list_api_keys(db: Database, principal: Principal) -> Sequence[ApiKey]:
    with db.read() as s:
        return s.scalars(
            select(ApiKey).where(ApiKey.user_id == principal.user_id, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)
        ).all()


def revoke_api_key(db: Database, principal: Principal, key_id: int) -> None:
    with db.write() as s:
        key = s.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == principal.user_id, ApiKey.revoked_at.is_(None))
        )
        if key is None:
            raise NotFound("API key not found", key_id=key_id)
        key.revoked_at = utcnow()
        digest = key.key_hash
        events.record(
            s, EventType.API_KEY_REVOKED, account_id=principal.account_id, target_type="api_key", target_id=key_id
        )
    forget_api_key(digest)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("This needs the admin role")


def admin_get_user(db: Database, principal: Principal, user_id: int) -> UserView:
    require_admin(principal)
    return view_of(db, user_id)


def admin_update_user(
    db: Database,
    principal: Principal,
    user_id: int,
    *,
    name: str | None = None,
    email: str | None = None,
    username: str | None = None,
    role: str | None = None,
    tier: str | None = None,
) -> UserView:
    """An admin's edit of any user: profile fields, role and tier. An admin cannot take their own admin role away
    (the platform would risk having none)."""
    require_admin(principal)
    view = view_of(db, user_id)
    if tier is not None and tier not in TIERS:  # checked before anything changes, as every other field is
        raise ValidationFailed(f"Tier must be one of {', '.join(TIERS)}", field="tier")
    if user_id == principal.user_id and role is not None and role != "admin":
        raise Conflict("Admins cannot take away their own admin role; ask another admin", field="role")
    _edit(db, user_id, view.account.id, name=name, email=email, username=username, role=role)
    if role is not None and role != view.user.role:
        # A principal carries its role: cached keys and sessions must be read again.
        forget_user_keys(user_id)
        forget_user_sessions(user_id)
    if tier is not None and tier != view.account.tier:
        return set_tier(db, principal, user_id, tier)
    return view_of(db, user_id)


def list_users(db: Database, principal: Principal, *, page: int, per_page: int) -> tuple[list[UserView], int]:
    require_admin(principal)
    with db.read() as s:
        total = s.scalar(counted(User.__table__, [])) or 0
        rows = s.execute(
            paged_window(
                select(User, Account).join(Account, Account.id == User.account_id),
                User.id,
                [],
                [User.id],
                window(total, page, per_page),
            )
        ).all()
    return [UserView(u, a) for u, a in rows], total


def set_tier(db: Database, principal: Principal, user_id: int, tier: str) -> UserView:
    require_admin(principal)
    if tier not in TIERS:
        raise ValidationFailed(f"Tier must be one of {', '.join(TIERS)}", field="tier")
    view = view_of(db, user_id)
    with db.write() as s:
        s.execute(update(Account).where(Account.id == view.account.id).values(tier=tier))
        # An admin's tier replaces any change the subscription had due at the end of its period.
        s.execute(
            update(Subscription)
            .where(Subscription.account_id == view.account.id)
            .values(pending_tier=None, cancel_at_period_end=False)
        )
        events.record(
            s,
            EventType.USER_TIER_CHANGED,
            account_id=view.account.id,
            target_type="user",
            target_id=user_id,
            data={"from": view.account.tier, "to": tier},
        )
    forget_account(view.account.id)
    return view_of(db, user_id)


def forget_account(account_id: int) -> None:
    """Forget the cached principals of an account's users: they carry its tier, which quotas and rate limits read,
    so a new tier holds from this process's next request (other processes: within the caches' 10 s)."""
    forget_account_keys(account_id)
    forget_account_sessions(account_id)


def set_status(db: Database, principal: Principal, user_id: int, status: str) -> UserView:
    """Suspend or reactivate a user; a suspended user's tokens and keys stop working, and every server of theirs is
    suspended with them (services/suspension.py). Reactivating lifts the suspension of every server of theirs."""
    require_admin(principal)
    if user_id == principal.user_id:
        raise Conflict("Admins cannot suspend themselves", user_id=user_id)
    before = view_of(db, user_id)
    with db.write() as s:
        s.execute(update(User).where(User.id == user_id).values(status=status))
        if status == "suspended":
            events.record(
                s, EventType.USER_SUSPENDED, account_id=before.account.id, target_type="user", target_id=user_id
            )
            accepted = suspension.suspend_account_servers(s.connection(), before.account.id)
        elif before.user.status == "suspended":
            accepted = suspension.unsuspend_account_servers(s.connection(), before.account.id)
        else:
            accepted = []
    for op in accepted:
        operations.launch(op)
    forget_user_keys(user_id)
    forget_user_sessions(user_id)
    return view_of(db, user_id)
