"""Container apps (VibeCaaS): create, list, read, change and delete, within the quotas of the account's tier.

An app has no deployment yet, so it is created "stopped" and stays so until deployments exist (a later change).
The tier's `max_cpu`, `max_memory` and `max_storage` cap each app's limits; `max_apps` caps how many there are.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import Account, App, User, utcnow
from cloudplane.domain.errors import Conflict, NotFound, QuotaExceeded, ValidationFailed
from cloudplane.domain.events import EventType
from cloudplane.domain.tiers import QUOTAS
from cloudplane.services import events, sources
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import counted, paged_window, window
from cloudplane.services.servers import Page
from cloudplane.services.tenancy import mine

STATUSES = ("running", "stopped", "failed")

# At most 30 characters, so that "{name}-{username}" (usernames have at most 32) is one DNS label of at most 63.
NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$")
MAX_NAME = 30
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_NAME = 255
# No NUL: it ends a C string, so no process environment can carry it (nor can PostgreSQL text).
ENV_VALUE = re.compile(r"^[^\x00]*$")
MAX_ENV_VALUE = 32_768
MAX_ENV_VARS = 100
# Text fields: the pattern each must match and its greatest length.
TEXT_FIELDS: dict[str, tuple[re.Pattern[str], int]] = {
    "description": (re.compile(r"^[^\x00]*$"), 1000),
    "framework": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$"), 50),
    "github_repo": (sources.SOURCE, 2048),
    "branch": (re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$"), 255),
    "health_check_path": (re.compile(r"^/[\x21-\x7e]*$"), 255),
}
NULLABLE = frozenset({"description", "framework", "github_repo", "health_check_path"})
# Whole-number fields: their least and greatest values; the greatest is what the largest tier allows.
INT_FIELDS: dict[str, tuple[int, int]] = {
    "port": (1, 65535),
    "cpu_limit": (50, max(q.max_cpu for q in QUOTAS.values())),  # millicores
    "memory_limit": (64, max(q.max_memory for q in QUOTAS.values())),  # MiB
    "storage_limit": (0, max(q.max_storage for q in QUOTAS.values())),  # MiB
}
# What an app gets when the request leaves a field out; the resource limits fit every tier.
DEFAULTS: dict[str, Any] = {
    "description": None,
    "framework": None,
    "github_repo": None,
    "branch": "main",
    "environment_variables": {},
    "port": 8000,
    "cpu_limit": 250,
    "memory_limit": 512,
    "storage_limit": 1024,
    "gpu_enabled": False,
    "health_check_path": None,
}
QUOTA_FIELDS = ("cpu_limit", "memory_limit", "storage_limit", "gpu_enabled")


@dataclass(frozen=True)
class AppView:
    """An app as read for a reply: its row, its variables decoded, and the URL it is served at."""

    app: App
    environment_variables: dict[str, str]
    url: str


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME or not NAME.fullmatch(name):
        raise ValidationFailed(
            f"name must be a DNS label of 1-{MAX_NAME} lowercase letters, digits and hyphens, starting with a letter "
            "and not ending with a hyphen",
            field="name",
        )
    return name


def validate_environment(variables: Any, field: str = "environment_variables") -> dict[str, str]:
    if not isinstance(variables, dict):
        raise ValidationFailed(f"{field} must be an object of names to string values", field=field)
    if len(variables) > MAX_ENV_VARS:
        raise ValidationFailed(f"An app has at most {MAX_ENV_VARS} environment variables", field=field)
    for name, value in variables.items():
        if not isinstance(name, str) or len(name) > MAX_ENV_NAME or not ENV_NAME.fullmatch(name):
            raise ValidationFailed(
                f"{name!r} is not a variable name: letters, digits and underscores, not starting with a digit, "
                f"at most {MAX_ENV_NAME}",
                field=f"{field}.{name}",
            )
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE or not ENV_VALUE.fullmatch(value):
            raise ValidationFailed(
                f"The value of {name} must be a string of at most {MAX_ENV_VALUE} characters without NUL",
                field=f"{field}.{name}",
            )
    return dict(variables)


def _validate(field: str, value: Any) -> Any:
    """`value` if it is allowed in `field`; raises ValidationFailed naming the field otherwise."""
    if value is None:
        if field in NULLABLE:
            return None
        raise ValidationFailed(f"{field} must not be null", field=field)
    if field in TEXT_FIELDS:
        pattern, longest = TEXT_FIELDS[field]
        if not isinstance(value, str) or len(value) > longest or not pattern.fullmatch(value):
            raise ValidationFailed(f"{field} must match {pattern.pattern} in at most {longest} characters", field=field)
    elif field in INT_FIELDS:
        least, greatest = INT_FIELDS[field]
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= greatest:
            raise ValidationFailed(f"{field} must be a whole number from {least} to {greatest}", field=field)
    elif field == "gpu_enabled":
        if not isinstance(value, bool):
            raise ValidationFailed("gpu_enabled must be true or false", field=field)
    elif field == "environment_variables":
        return validate_environment(value)
    else:
        raise ValidationFailed(f"{field} cannot be set", field=field)
    return value


def _check_source(core: Core, values: dict[str, Any]) -> None:
    if values.get("github_repo") is not None:
        settings = core.settings
        sources.check_source(
            values["github_repo"],
            allow_local=settings.apps_allow_local_sources,
            allow_private=settings.apps_allow_private_sources,
        )


def check_quotas(tier: str, values: dict[str, Any]) -> None:
    """Refuse resource limits above what the tier allows one app, naming the field and the limit."""
    quotas = QUOTAS[tier]
    for field, quota, limit, unit in (
        ("cpu_limit", "max_cpu", quotas.max_cpu, "millicores"),
        ("memory_limit", "max_memory", quotas.max_memory, "MiB"),
        ("storage_limit", "max_storage", quotas.max_storage, "MiB"),
    ):
        if values[field] > limit:
            raise QuotaExceeded(
                f"{field} {values[field]} is above the {tier} tier's limit of {limit} {unit} per app",
                field=field,
                quota=quota,
                limit=limit,
                tier=tier,
            )
    if values["gpu_enabled"] and not quotas.gpu_enabled:
        raise QuotaExceeded(
            f"The {tier} tier has no GPUs: gpu_enabled must be false",
            field="gpu_enabled",
            quota="gpu_enabled",
            limit=False,
            tier=tier,
        )


def canonical_id(app_id: str) -> str:
    """The app id in its stored form; NotFound for anything that is not a UUID, so it never reaches a query."""
    try:
        # ASCII only: uuid.UUID reads Arabic-Indic or full-width digits as hex digits, naming another app.
        if len(app_id) <= 45 and app_id.isascii():
            return str(uuid.UUID(app_id))
    except ValueError:
        pass
    raise NotFound("Application not found", app_id=app_id)


def _owner_label(session: Session, account_id: int) -> str:
    """The account's part of its apps' host names: its first user's username as a DNS label."""
    username = session.scalar(select(User.username).where(User.account_id == account_id).order_by(User.id).limit(1))
    label = re.sub(r"[^a-z0-9]+", "-", (username or "").lower()).strip("-")
    return label or f"account-{account_id}"


def _view(core: Core, app: App, owner: str) -> AppView:
    return AppView(
        app=app,
        environment_variables=dict(app.environment_variables),
        url=f"https://{app.name}-{owner}.{core.settings.apps_domain}",
    )


def _tier(session: Session, account_id: int) -> str:
    # FOR UPDATE: concurrent creates of one account take turns, so two cannot both pass the max_apps count
    # (PostgreSQL; SQLite's writers take turns anyway).
    return session.execute(select(Account.tier).where(Account.id == account_id).with_for_update()).scalar_one()


def create_app(core: Core, principal: Principal, *, name: str, **fields: Any) -> AppView:
    """Record a new app, stopped; the name is unique in the account and the limits within the tier's quotas."""
    validate_name(name)
    values = {**DEFAULTS, **{field: _validate(field, value) for field, value in fields.items()}}
    _check_source(core, values)
    duplicate = Conflict(f"An app named {name!r} already exists in your account", field="name", name=name)
    try:
        with core.db.write() as s:
            tier = _tier(s, principal.account_id)
            check_quotas(tier, values)
            if s.scalar(select(App.id).where(mine(App, principal), App.name == name)):
                raise duplicate
            count = s.execute(select(func.count()).select_from(App).where(mine(App, principal))).scalar_one()
            if count >= (limit := QUOTAS[tier].max_apps):
                raise QuotaExceeded(
                    f"The {tier} tier allows {limit} apps and your account has {count}",
                    field="max_apps",
                    quota="max_apps",
                    limit=limit,
                    tier=tier,
                )
            values["environment_variables"] = dict(values["environment_variables"])
            app = App(id=str(uuid.uuid4()), account_id=principal.account_id, name=name, status="stopped", **values)
            s.add(app)
            s.flush()
            events.record(
                s,
                EventType.APP_CREATED,
                account_id=principal.account_id,
                target_type="app",
                target_id=app.id,
                data={"name": name},
            )
            return _view(core, app, _owner_label(s, principal.account_id))
    except IntegrityError:  # a concurrent create of the same name won the race
        raise duplicate from None


def list_apps(core: Core, principal: Principal, *, page: int, per_page: int, status: str | None = None) -> Page:
    """A page of the caller's apps, newest first, only those in `status` if given."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}", field="status")
    where = [mine(App, principal)]
    if status is not None:
        where.append(App.status == status)
    with core.db.read() as s:
        total = s.scalar(counted(App.__table__, where)) or 0
        order = (App.created_at.desc(), App.id.desc())
        rows = s.scalars(paged_window(select(App), App.id, where, order, window(total, page, per_page))).all()
        owner = _owner_label(s, principal.account_id) if rows else ""
    return Page(items=[_view(core, app, owner) for app in rows], total=total, page=page, per_page=per_page)


def owned_app(session: Session, principal: Principal, app_id: str) -> App:
    """The caller's app of that id; NotFound for another account's, as for one that never existed."""
    app = session.scalar(select(App).where(App.id == canonical_id(app_id), mine(App, principal)))
    if app is None:
        raise NotFound("Application not found", app_id=app_id)
    return app


def get_app(core: Core, principal: Principal, app_id: str) -> AppView:
    with core.db.read() as s:
        return _view(core, owned_app(s, principal, app_id), _owner_label(s, principal.account_id))


def update_app(core: Core, principal: Principal, app_id: str, **changes: Any) -> AppView:
    """Change the fields given (the name stays). `environment_variables` is merged into the app's as in a JSON merge
    patch (RFC 7396): the names given are set, a null value removes its variable. Limits stay within the quotas."""
    patching = "environment_variables" in changes
    patch = changes.pop("environment_variables", None)
    if patching:
        if not isinstance(patch, dict):
            raise ValidationFailed("environment_variables must be an object", field="environment_variables")
        # Every name must be a variable name, even one whose null removes it.
        validate_environment({name: "" if value is None else value for name, value in patch.items()})
    values = {field: _validate(field, value) for field, value in changes.items()}
    _check_source(core, values)
    with core.db.write() as s:
        app = owned_app(s, principal, app_id)
        if patching:
            merged = dict(app.environment_variables) | patch
            values["environment_variables"] = validate_environment({k: v for k, v in merged.items() if v is not None})
        current = {field: getattr(app, field) for field in QUOTA_FIELDS}
        check_quotas(_tier(s, principal.account_id), current | values)
        for field, value in values.items():
            setattr(app, field, value)
        app.updated_at = utcnow()
        s.flush()
        # Names of what changed, never values: environment variables hold secrets.
        changed = sorted({*values, *(["environment_variables"] if patching else [])})
        events.record(
            s,
            EventType.APP_UPDATED,
            account_id=principal.account_id,
            target_type="app",
            target_id=app.id,
            data={"fields": changed},
        )
        return _view(core, app, _owner_label(s, principal.account_id))


def delete_app(core: Core, principal: Principal, app_id: str) -> None:
    with core.db.write() as s:
        result = s.execute(delete(App).where(App.id == canonical_id(app_id), mine(App, principal)))
        if cast(CursorResult[Any], result).rowcount != 1:
            raise NotFound("Application not found", app_id=app_id)
        events.record(
            s, EventType.APP_DELETED, account_id=principal.account_id, target_type="app", target_id=canonical_id(app_id)
        )
