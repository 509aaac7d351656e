"""What admins see of the whole platform: counts and servers across every tenant, and the health of what Cloudplane
depends on, each checked for real (never a made-up `online`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, text
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import SERVER_STATE_WORD, Operation, Server, User, table_of, utcnow
from cloudplane.services import billing, mail
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import Page, counted, paged_window, window
from cloudplane.services.servers import ServerView, server_views
from cloudplane.services.users import require_admin

# A provider that answers no faster than this is reported offline.
PROVIDER_CHECK_TIMEOUT_S = 5.0
# A ref no provider ever made: asking for it checks the provider can be reached and answers.
PROBE_REF = "cloudplane-health-probe"
# Providers the CloudVPS document names in its health reply: `not_configured` when no location runs on them.
NAMED_PROVIDERS = ("proxmox",)


def stats(core: Core, principal: Principal) -> dict[str, Any]:
    """Users by status, live servers by status (the power state, for a suspended one), by provider and how many are
    suspended, operations in flight and failed in the last day, revenue and the accounts with overdue invoices."""
    require_admin(principal)
    since = utcnow() - timedelta(days=1)
    live = Server.deleted_at.is_(None)
    with core.db.read() as s:
        users = _count_by(s, User.status)
        by_status = _count_by(s, Server.status, live)
        by_provider = _count_by(s, Server.provider, live)
        suspended = s.scalar(select(func.count()).select_from(Server).where(live, Server.suspended_at.isnot(None)))
        in_flight = _count_by(s, Operation.status, Operation.status.in_(("pending", "running")))
        money = billing.admin_revenue(s, utcnow())
        failed = s.scalar(
            select(func.count())
            .select_from(Operation)
            .where(Operation.status == "failed", Operation.finished_at >= since)
        )
    return {
        "users": {"total": sum(users.values()), **{status: users.get(status, 0) for status in ("active", "suspended")}},
        "servers": {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "by_provider": by_provider,
            "suspended": suspended or 0,
        },
        "operations": {
            "in_flight": sum(in_flight.values()),
            "pending": in_flight.get("pending", 0),
            "running": in_flight.get("running", 0),
            "failed_last_day": failed or 0,
        },
        **money,
    }


@dataclass(frozen=True, slots=True)
class OwnedServer:
    """A server with who owns it, as admins list them."""

    server: ServerView
    user_id: int | None
    email: str | None


_servers, _users = table_of(Server), table_of(User)


def list_servers(
    core: Core,
    principal: Principal,
    *,
    page: int,
    per_page: int,
    state: str | None = None,
    user_id: int | None = None,
    location: str | None = None,
    search: str | None = None,
) -> Page[OwnedServer]:
    """Every tenant's live servers, newest first, with their owners: only those in `state` (the current-state word,
    "suspended" included), of the user `user_id`, in `location` (a catalog location's slug, or a rented instance's
    region), or whose name contains `search` (any case), when given."""
    require_admin(principal)
    where: list[ColumnElement[bool]] = [_servers.c.deleted_at.is_(None)]
    if state is not None:
        where.append(SERVER_STATE_WORD == state)
    if user_id is not None:
        where.append(
            _servers.c.account_id == select(_users.c.account_id).where(_users.c.id == user_id).scalar_subquery()
        )
    if location is not None:
        found = core.catalog.view().by_slug("location", location)
        where.append(
            or_(_servers.c.location_id == found.id, _servers.c.region == location)
            if found is not None
            else _servers.c.region == location
        )
    if search:
        where.append(func.lower(_servers.c.label).contains(search.lower(), autoescape=True))
    order = [_servers.c.id.desc()]
    with core.db.connect() as conn:
        total = conn.execute(counted(_servers, where)).scalar_one()
        rows = paged_window(select(_servers), _servers.c.id, where, order, window(total, page, per_page))
        views = server_views(conn, conn.execute(rows).all(), core.catalog.view())
        accounts = {v.account_id for v in views}
        # An account's first user is its owner (an account has one user today).
        owners = {
            account: (uid, email)
            for account, uid, email in conn.execute(
                select(_users.c.account_id, _users.c.id, _users.c.email)
                .where(_users.c.account_id.in_(accounts))
                .order_by(_users.c.account_id, _users.c.id.desc())
            )
        }
    items = [OwnedServer(v, *owners.get(v.account_id, (None, None))) for v in views]
    return Page(items=items, total=total, page=page, per_page=per_page)


def _count_by(session: Session, column: Any, *where: ColumnElement[bool]) -> dict[str, int]:
    """Rows per value of `column` (of the rows `where` selects)."""
    query = select(column, func.count()).where(*where).group_by(column)
    return {value: count for value, count in session.execute(query)}


def _database_latency_ms(core: Core) -> float:
    """How long a query takes now (raises when the database cannot answer)."""
    started = time.perf_counter()
    with core.db.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()
    return (time.perf_counter() - started) * 1000


async def _stripe_check(core: Core) -> dict[str, Any]:
    """Stripe answering an authenticated read now; `not_configured` when payments are offline."""
    if core.stripe is None:
        return {"status": "not_configured"}
    started = time.perf_counter()
    try:
        await asyncio.wait_for(core.stripe.check(), PROVIDER_CHECK_TIMEOUT_S)
    except TimeoutError:
        return {"status": "offline", "error": f"no answer within {PROVIDER_CHECK_TIMEOUT_S:g} s"}
    except Exception as error:  # noqa: BLE001 - whatever fails, Stripe cannot take payments now: say what it was
        return {"status": "offline", "error": str(error).splitlines()[0][:200] or type(error).__name__}
    return {"status": "online", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


async def _email_check(core: Core) -> dict[str, Any]:
    """The SMTP server answering EHLO and NOOP now; `not_configured` when no mail is sent (no smtp_host)."""
    settings = core.settings
    if not mail.configured(settings):
        return {"status": "not_configured"}
    started = time.perf_counter()
    try:
        # The socket's own timeout ends a silent server's check; wait_for is the bound on the whole conversation.
        await asyncio.wait_for(
            asyncio.to_thread(mail.smtp_check, settings, PROVIDER_CHECK_TIMEOUT_S), PROVIDER_CHECK_TIMEOUT_S + 1
        )
    except TimeoutError:
        return {"status": "offline", "error": f"no answer within {PROVIDER_CHECK_TIMEOUT_S:g} s"}
    except Exception as error:  # noqa: BLE001 - whatever fails, no mail goes now: say what it was
        return {"status": "offline", "error": str(error).splitlines()[0][:200] or type(error).__name__}
    return {"status": "online", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


async def _provider_check(core: Core, name: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(core.providers.get(name).get(PROBE_REF), PROVIDER_CHECK_TIMEOUT_S)
    except TimeoutError:
        return {"status": "offline", "error": f"no answer within {PROVIDER_CHECK_TIMEOUT_S:g} s"}
    except Exception as error:  # noqa: BLE001 - whatever fails, the provider cannot serve now: say what it was
        return {"status": "offline", "error": getattr(error, "message", None) or str(error) or type(error).__name__}
    return {"status": "online", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def _memory_percent() -> float | None:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total = int(fields["MemTotal"].split()[0])
        available = int(fields["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        return None
    return round(100 * (total - available) / total, 1) if total else None


def _disk_percent(path: str) -> float | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return round(100 * usage.used / usage.total, 1) if usage.total else None


def _database_directory(core: Core) -> str:
    """Where the SQLite file lies (its file system is what fills up); `/` for PostgreSQL or a database in memory."""
    file = core.db.read_engine.url.database  # SQLAlchemy's reading of the URL
    if core.db.is_sqlite and file and file != ":memory:":
        return str(Path(file).resolve().parent)
    return "/"


async def health(core: Core, principal: Principal) -> dict[str, Any]:
    """The database and every configured provider, checked now (`proxmox` as `not_configured` when no location runs
    on it); `stripe` and `email` (the SMTP server) checked when configured (else `not_configured`); this host's load, memory and disk
    (the database's file system) as percentages."""
    require_admin(principal)
    services: dict[str, str] = {}
    details: dict[str, Any] = {}
    try:
        latency = await core.db.run(_database_latency_ms, core)
        services["database"] = "online"
        details["database"] = {"status": "online", "latency_ms": round(latency, 1)}
    except Exception as error:  # noqa: BLE001 - a database that fails the check is offline, whatever the error
        services["database"] = "offline"
        details["database"] = {"status": "offline", "error": str(error).splitlines()[0][:200]}
    names = core.providers.names()
    checks = await asyncio.gather(*(_provider_check(core, name) for name in names))
    for name, check in zip(names, checks, strict=True):
        services[name] = check["status"]
        details[name] = check
    for name, reason in core.providers.unavailable.items():
        services[name] = "offline"
        details[name] = {"status": "offline", "error": reason}
    stripe = await _stripe_check(core)
    services["stripe"] = stripe["status"]
    if stripe["status"] != "not_configured":
        details["stripe"] = stripe
    email = await _email_check(core)
    services["email"] = email["status"]
    if email["status"] != "not_configured":
        details["email"] = email
    for name in NAMED_PROVIDERS:
        services.setdefault(name, "not_configured")
    if services["database"] != "online":
        status = "unhealthy"
    elif any(state == "offline" for state in services.values()):
        status = "degraded"
    else:
        status = "healthy"
    counts = await core.db.run(_counts, core) if services["database"] == "online" else {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "status": status,
        "services": services,
        "checks": details,
        "metrics": {
            **counts,
            "system_load": round(load, 2) if load is not None else None,
            "memory_usage": _memory_percent(),
            "disk_usage": _disk_percent(_database_directory(core)),
        },
    }


def _counts(core: Core) -> dict[str, int]:
    with core.db.read() as s:
        users = _count_by(s, User.status)
        servers = _count_by(s, Server.status, Server.deleted_at.is_(None))
    return {"total_users": sum(users.values()), "active_vps": servers.get("running", 0)}
