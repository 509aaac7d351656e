"""Cost recommendations: where an account pays for what it does not use (idle servers, oversized plans, stopped
servers still paying for their disk, old snapshots, idle GPU instances), each with the figures it was read from
and what to do. The rules are pure functions over those figures; `recommend` reads them (the hourly usage history
of services/metrics.py, the catalog's plans, the prices billing charges) and applies the rules.

Thresholds, all here:
- enough history: at least MIN_HOURS hours of usage in the window, else no judgement on the server's size or use
  (a note says so instead);
- idle: CPU p95 below IDLE_CPU_P95_PERCENT and transfer (in + out) p95 below IDLE_NETWORK_MB_PER_HOUR;
- oversized: a cheaper plan of the same location whose RAM covers the peak memory, whose vCPUs cover the p95 CPU
  (in vCPUs), both with HEADROOM, and the peak CPU without; and whose disk holds the most the disk held, with
  HEADROOM (the plan's whole disk when the driver cannot tell);
- stopped for more than STOPPED_DAYS days (while it keeps its disk, billed at the storage price);
- a snapshot older than OLD_SNAPSHOT_DAYS days.
The history is the hourly roll-up (hourly averages): a peak shorter than an hour is averaged into its hour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select

from cloudplane.core import Core
from cloudplane.db.tables import Event, Plan, Server, ServerSample, Snapshot, table_of, utcnow
from cloudplane.domain import pricing
from cloudplane.domain.states import ServerStatus, SnapshotStatus
from cloudplane.services.accounts import Principal
from cloudplane.services.billing import STATE_EVENTS
from cloudplane.services.metrics import HOUR_S, IDS_PER_QUERY, KEEP_HOURS, MB
from cloudplane.services.servers import ServerView, server_views
from cloudplane.services.tenancy import mine

DEFAULT_DAYS = 14
MAX_DAYS = 90
MIN_HOURS = 72
IDLE_CPU_P95_PERCENT = 5.0
IDLE_NETWORK_MB_PER_HOUR = 1.0
HEADROOM = 0.2
STOPPED_DAYS = 7
OLD_SNAPSHOT_DAYS = 30

Kind = Literal["idle_server", "oversized_plan", "stopped_server_disk", "old_snapshot", "idle_gpu_instance"]
Confidence = Literal["high", "medium", "low"]


@dataclass(frozen=True)
class Hour:
    """One hour of a server's usage, as the hourly roll-up keeps it."""

    cpu_percent: float
    memory_used_mb: int
    disk_used_mb: int | None
    network_bytes: int


@dataclass(frozen=True)
class UsageSummary:
    hours: int
    cpu_p95_percent: float
    cpu_max_percent: float
    memory_peak_mb: int
    disk_peak_mb: int | None
    network_p95_mb_per_hour: float
    network_total_mb: float

    def evidence(self) -> dict[str, Any]:
        return {
            "hours_of_samples": self.hours,
            "cpu_p95_percent": round(self.cpu_p95_percent, 1),
            "cpu_max_percent": round(self.cpu_max_percent, 1),
            "memory_peak_mb": self.memory_peak_mb,
            "disk_peak_mb": self.disk_peak_mb,
            "network_p95_mb_per_hour": round(self.network_p95_mb_per_hour, 3),
            "network_total_mb": round(self.network_total_mb, 3),
        }


def p95(values: Sequence[float]) -> float:
    """The 95th percentile by nearest rank: the value 95% of the values do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def summarize(hours: Sequence[Hour]) -> UsageSummary | None:
    """The figures the rules read from a server's hours; None without any."""
    if not hours:
        return None
    disks = [h.disk_used_mb for h in hours if h.disk_used_mb is not None]
    return UsageSummary(
        hours=len(hours),
        cpu_p95_percent=p95([h.cpu_percent for h in hours]),
        cpu_max_percent=max(h.cpu_percent for h in hours),
        memory_peak_mb=max(h.memory_used_mb for h in hours),
        disk_peak_mb=max(disks) if disks else None,
        network_p95_mb_per_hour=p95([h.network_bytes / MB for h in hours]),
        network_total_mb=sum(h.network_bytes for h in hours) / MB,
    )


@dataclass(frozen=True)
class Size:
    """A catalog plan as the rules see it."""

    slug: str
    name: str
    cpu: int
    ram_mb: int
    disk_gb: int
    monthly: Decimal


@dataclass(frozen=True)
class ServerFacts:
    """What the rules read of a server: what it costs a month running, and held (stopped: its disk)."""

    id: int
    label: str
    status: str
    gpu: bool
    monthly: Decimal
    held_monthly: Decimal
    plan: Size | None = None
    location: str | None = None
    image: str | None = None
    # When it last changed power state (for a stopped server: when it stopped).
    stopped_at: datetime | None = None


@dataclass(frozen=True)
class SnapshotFacts:
    id: int
    server_id: int
    label: str
    size_gb: int | None
    created_at: datetime


@dataclass(frozen=True)
class Action:
    description: str
    # The API call that does it ("POST /api/servers/12/stop"), and its body; None where no single call does.
    request: str | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Recommendation:
    kind: Kind
    resource_type: Literal["server", "gpu_instance", "snapshot"]
    resource_id: int
    label: str
    evidence: dict[str, Any]
    action: Action
    monthly_saving: Decimal
    confidence: Confidence
    why: str


@dataclass(frozen=True)
class Report:
    days: int
    start: datetime
    end: datetime
    currency: str
    recommendations: list[Recommendation]
    notes: list[str] = field(default_factory=list)

    @property
    def total_monthly_saving(self) -> Decimal:
        return sum((r.monthly_saving for r in self.recommendations), Decimal(0))


def held_monthly(disk_gb: Decimal | int | None) -> Decimal:
    """What a month of a stopped server's disk costs (billing's storage price), to the cent."""
    return (pricing.STORAGE_GB_MONTH * Decimal(disk_gb or 0)).quantize(pricing.CENT)


def _money(amount: Decimal) -> str:
    return f"${pricing.money_text(amount)}"


def _name(server: ServerFacts) -> str:
    return f"{'GPU instance' if server.gpu else 'server'} {server.id} ({server.label})"


def enough_history(server: ServerFacts, usage: UsageSummary | None) -> str | None:
    """None when the usage is enough to judge the server by, else the note that says why it was not judged."""
    hours = usage.hours if usage else 0
    if hours >= MIN_HOURS:
        return None
    if server.gpu and not hours:
        return f"{_name(server)}: its provider reports no usage figures, so whether it is idle cannot be told"
    return f"{_name(server)}: {hours} hours of usage recorded in the window, {MIN_HOURS} needed before judging it"


def is_idle(usage: UsageSummary) -> bool:
    return usage.cpu_p95_percent < IDLE_CPU_P95_PERCENT and usage.network_p95_mb_per_hour < IDLE_NETWORK_MB_PER_HOUR


def idle(server: ServerFacts, usage: UsageSummary) -> Recommendation | None:
    """A running server (or GPU instance) that neither computes nor talks: stopping it saves all but its disk."""
    if server.status != ServerStatus.RUNNING or not is_idle(usage):
        return None
    saving = max(server.monthly - server.held_monthly, Decimal(0))
    what = "GPU instance" if server.gpu else "server"
    return Recommendation(
        kind="idle_gpu_instance" if server.gpu else "idle_server",
        resource_type="gpu_instance" if server.gpu else "server",
        resource_id=server.id,
        label=server.label,
        evidence={**usage.evidence(), "monthly_price": pricing.money_text(server.monthly)},
        action=Action(
            f"Stop the {what} if nothing needs it (its disk still costs {_money(server.held_monthly)} a month), or "
            f"delete it (DELETE /api/servers/{server.id}) to save the whole {_money(server.monthly)}",
            f"POST /api/servers/{server.id}/stop",
        ),
        monthly_saving=saving,
        confidence="high" if usage.hours >= 7 * 24 else "medium",
        why=f"CPU p95 {usage.cpu_p95_percent:.1f}% (< {IDLE_CPU_P95_PERCENT:g}%) and transfer p95 "
        f"{usage.network_p95_mb_per_hour:.3f} MB/h (< {IDLE_NETWORK_MB_PER_HOUR:g} MB/h) over {usage.hours} hours",
    )


def smaller_plan(current: Size, usage: UsageSummary, candidates: Iterable[Size]) -> Size | None:
    """The cheapest plan cheaper than `current` that fits the usage with headroom (see the module's thresholds)."""
    ram_needed = usage.memory_peak_mb * (1 + HEADROOM)
    cpus_needed = max(
        usage.cpu_p95_percent / 100 * current.cpu * (1 + HEADROOM), usage.cpu_max_percent / 100 * current.cpu
    )
    disk_needed_gb = current.disk_gb if usage.disk_peak_mb is None else usage.disk_peak_mb * (1 + HEADROOM) / 1024
    fits = [
        p
        for p in candidates
        if p.monthly < current.monthly
        and p.ram_mb >= ram_needed
        and p.cpu >= cpus_needed
        and p.disk_gb >= disk_needed_gb
    ]
    return min(fits, key=lambda p: (p.monthly, p.slug), default=None)


def oversized(server: ServerFacts, usage: UsageSummary, candidates: Iterable[Size]) -> Recommendation | None:
    """A running catalog server whose last weeks' peak fits a cheaper plan of its location."""
    if server.status != ServerStatus.RUNNING or server.plan is None:
        return None
    smaller = smaller_plan(server.plan, usage, candidates)
    if smaller is None:
        return None
    return Recommendation(
        kind="oversized_plan",
        resource_type="server",
        resource_id=server.id,
        label=server.label,
        evidence={
            **usage.evidence(),
            "plan": server.plan.slug,
            "plan_cpu": server.plan.cpu,
            "plan_ram_mb": server.plan.ram_mb,
            "monthly_price": pricing.money_text(server.plan.monthly),
            "suggested_plan": smaller.slug,
            "suggested_cpu": smaller.cpu,
            "suggested_ram_mb": smaller.ram_mb,
            "suggested_disk_gb": smaller.disk_gb,
            "suggested_monthly_price": pricing.money_text(smaller.monthly),
        },
        action=Action(
            f"Resize to {smaller.slug} ({smaller.name}: {smaller.cpu} vCPU, {smaller.ram_mb} MB RAM, "
            f"{smaller.disk_gb} GB disk). Servers cannot be resized in place yet: create a {smaller.slug} server "
            f"in {server.location}, move the workload, then delete this one (DELETE /api/servers/{server.id})",
            "POST /api/servers",
            {
                "label": server.label,
                "plan_slug": smaller.slug,
                "image_slug": server.image,
                "location_slug": server.location,
            },
        ),
        monthly_saving=server.plan.monthly - smaller.monthly,
        confidence="medium",
        why=f"peak memory {usage.memory_peak_mb} MB and CPU p95 {usage.cpu_p95_percent:.1f}% (max "
        f"{usage.cpu_max_percent:.1f}%) of {server.plan.cpu} vCPU fit {smaller.slug} with {HEADROOM:.0%} headroom; "
        "hourly averages hide peaks shorter than an hour",
    )


def stopped(server: ServerFacts, now: datetime) -> Recommendation | None:
    """A server stopped for more than STOPPED_DAYS days, still paying for its disk."""
    if server.status != ServerStatus.STOPPED or server.stopped_at is None or not server.held_monthly:
        return None
    days = (now - server.stopped_at) / timedelta(days=1)
    if days <= STOPPED_DAYS:
        return None
    what = "GPU instance" if server.gpu else "server"
    return Recommendation(
        kind="idle_gpu_instance" if server.gpu else "stopped_server_disk",
        resource_type="gpu_instance" if server.gpu else "server",
        resource_id=server.id,
        label=server.label,
        evidence={
            "days_stopped": round(days, 1),
            "stopped_at": server.stopped_at.isoformat(),
            "disk_monthly_price": pricing.money_text(server.held_monthly),
        },
        action=Action(
            f"Delete the {what} if it is no longer needed (its disk and snapshots go with it; take what you need "
            "off it first)",
            f"DELETE /api/servers/{server.id}",
        ),
        monthly_saving=server.held_monthly,
        confidence="high",
        why=f"stopped for {days:.0f} days (> {STOPPED_DAYS}), its disk still billed at "
        f"{_money(pricing.STORAGE_GB_MONTH)} per GB a month",
    )


def old_snapshot(snapshot: SnapshotFacts, now: datetime) -> Recommendation | None:
    """A snapshot older than OLD_SNAPSHOT_DAYS days. Snapshots are not billed: deleting one frees storage, not
    money, so its saving is 0 and only the owner can tell whether it is still wanted."""
    days = (now - snapshot.created_at) / timedelta(days=1)
    if days <= OLD_SNAPSHOT_DAYS:
        return None
    return Recommendation(
        kind="old_snapshot",
        resource_type="snapshot",
        resource_id=snapshot.id,
        label=snapshot.label,
        evidence={
            "age_days": round(days, 1),
            "created_at": snapshot.created_at.isoformat(),
            "size_gb": snapshot.size_gb,
            "server_id": snapshot.server_id,
        },
        action=Action(
            "Delete the snapshot if you will not restore it",
            f"DELETE /api/servers/{snapshot.server_id}/snapshots/{snapshot.id}",
        ),
        monthly_saving=Decimal("0.00"),
        confidence="low",
        why=f"taken {days:.0f} days ago (> {OLD_SNAPSHOT_DAYS}); snapshots are not billed, so this frees "
        f"{snapshot.size_gb or 0} GB of storage rather than money",
    )


def judge(
    servers: Sequence[ServerFacts],
    usage: dict[int, UsageSummary | None],
    plans_at: dict[str, list[Size]],
    snapshots: Sequence[SnapshotFacts],
    now: datetime,
) -> tuple[list[Recommendation], list[str]]:
    """Every rule over every resource: the recommendations, most saving first, and the notes on what could not be
    judged."""
    found: list[Recommendation] = []
    notes: list[str] = []
    for server in servers:
        if server.status == ServerStatus.STOPPED:
            rec = stopped(server, now)
        elif server.status == ServerStatus.RUNNING:
            summary = usage.get(server.id)
            note = enough_history(server, summary)
            if note is not None:
                notes.append(note)
                continue
            assert summary is not None  # enough_history says so
            rec = idle(server, summary) or oversized(server, summary, plans_at.get(server.location or "", []))
        else:
            rec = None
        if rec is not None:
            found.append(rec)
    found.extend(r for r in (old_snapshot(s, now) for s in snapshots) if r is not None)
    found.sort(key=lambda r: (-r.monthly_saving, r.kind, r.resource_id))
    return found, notes


# Reading the figures.

_samples, _events, _servers, _snapshots = (table_of(t) for t in (ServerSample, Event, Server, Snapshot))


def _facts(view: ServerView, stopped_at: datetime | None) -> ServerFacts:
    plan = view.plan
    return ServerFacts(
        id=view.id,
        label=view.label,
        status=view.status,
        gpu=view.offer_id is not None,
        monthly=view.prices.monthly,
        held_monthly=held_monthly(view.specs.disk_gb),
        plan=_size(plan) if plan is not None else None,
        location=view.location.slug if view.location else None,
        image=view.image.slug if view.image else None,
        stopped_at=stopped_at,
    )


def _size(plan: Plan) -> Size:
    return Size(plan.slug, plan.name, plan.cpu, plan.ram_mb, plan.disk_gb, Decimal(plan.price_monthly))


def recommend(core: Core, principal: Principal, *, days: int = DEFAULT_DAYS, now: datetime | None = None) -> Report:
    """The caller's recommendations over the last `days` days."""
    now = now or utcnow()
    start = now - timedelta(days=days)
    notes = []
    if timedelta(days=days) > KEEP_HOURS:
        notes.append(f"usage is kept hour by hour for {KEEP_HOURS.days} days: older days have none to read")
    catalog = core.catalog.view()
    with core.db.connect() as conn:
        rows = conn.execute(
            select(_servers).where(mine(Server, principal), _servers.c.deleted_at.is_(None)).order_by(_servers.c.id)
        ).all()
        views = server_views(conn, rows, catalog)
        ids = [v.id for v in views]
        hours: dict[int, list[Hour]] = {i: [] for i in ids}
        changed: dict[int, datetime] = {}
        for chunk in range(0, len(ids), IDS_PER_QUERY):
            some = ids[chunk : chunk + IDS_PER_QUERY]
            for r in conn.execute(
                select(_samples).where(
                    _samples.c.server_id.in_(some),
                    _samples.c.resolution_s == HOUR_S,
                    _samples.c.at >= start,
                    _samples.c.at < now,
                )
            ):
                hours[r.server_id].append(
                    Hour(r.cpu_percent, r.memory_used_mb, r.disk_used_mb, r.net_in_bytes + r.net_out_bytes)
                )
            stopped_ids = [str(v.id) for v in views[chunk : chunk + IDS_PER_QUERY] if v.status == ServerStatus.STOPPED]
            if stopped_ids:
                for target_id, at in conn.execute(
                    select(_events.c.target_id, func.max(_events.c.created_at))
                    .where(_events.c.target_type == "server", _events.c.target_id.in_(stopped_ids))
                    .where(_events.c.type.in_(STATE_EVENTS))
                    .group_by(_events.c.target_id)
                ):
                    changed[int(target_id)] = at
        snapshots = [
            SnapshotFacts(r.id, r.server_id, r.label, r.size_gb, r.created_at)
            for r in conn.execute(
                select(_snapshots)
                .join(_servers, _servers.c.id == _snapshots.c.server_id)
                .where(
                    mine(Snapshot, principal),
                    _snapshots.c.deleted_at.is_(None),
                    _servers.c.deleted_at.is_(None),
                    _snapshots.c.status == SnapshotStatus.AVAILABLE,
                )
                .order_by(_snapshots.c.id)
            )
        ]
    # A stopped server without a state event (made before the events existed): its last update is when it stopped.
    facts = [
        _facts(v, changed.get(v.id, v.updated_at)) if v.status == ServerStatus.STOPPED else _facts(v, None)
        for v in views
        if v.suspended_at is None  # an administrator's suspension is not the owner's to undo
    ]
    plans_at = {
        loc.slug: [_size(p) for p in catalog.plans_at(loc)] for loc in catalog.locations if catalog.is_open(loc)
    }
    found, judged_notes = judge(facts, {i: summarize(h) for i, h in hours.items()}, plans_at, snapshots, now)
    return Report(days, start, now, pricing.CURRENCY, found, notes + judged_notes)
