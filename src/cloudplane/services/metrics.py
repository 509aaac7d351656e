"""Servers' usage history: a sample of each running server's counters a minute apart by default (kept a day), rolled up by the
hour (kept a month), and the view CloudVPS shows of them. The jobs that take and roll up the samples are in
workflows/metrics.py; storage per server is bounded (a day of samples, 1,440 at the default interval, and 744
hours)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Integer, bindparam, cast, delete, func, insert, literal, select

from cloudplane.core import Core
from cloudplane.db.tables import Server, ServerSample, table_of, utcnow
from cloudplane.domain.errors import ValidationFailed
from cloudplane.domain.states import ServerStatus
from cloudplane.providers.base import Feature, Metrics
from cloudplane.services.accounts import Principal
from cloudplane.services.servers import get_server_in, require_capability

log = logging.getLogger(__name__)

# `resolution_s` of a sample (one moment); an hourly roll-up's is HOUR_S.
RAW = 0
HOUR_S = 3600
KEEP_SAMPLES = timedelta(days=1)
KEEP_HOURS = timedelta(days=31)
# A sample older than this is not "now": the server has not been sampled since (stopped, or no process sampled).
CURRENT_WITHIN = timedelta(minutes=5)
# How far back a sample's predecessor is looked for (its bytes are counted from there): a few missed samples.
PREVIOUS_WITHIN = timedelta(minutes=15)
# Server ids per query (SQLite takes at most 32,766 parameters).
IDS_PER_QUERY = 1000
# Provider calls a sampling pass makes at once.
SAMPLING_CONCURRENCY = 16
Period = Literal["hour", "day", "week", "month"]
PERIODS: dict[str, timedelta] = {
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
    "month": timedelta(days=30),
}
MB = 1_000_000

_samples = table_of(ServerSample)


@dataclass(frozen=True)
class Reading:
    server_id: int
    metrics: Metrics


# Servers a sampling pass reads, asks their providers about and records at a time: its memory and each of its
# transactions stay the same size however big the fleet (bench/bench_scale.py samples 100k servers).
SAMPLING_BATCH = 500


def _sampling_targets(core: Core, after: int, limit: int) -> list[tuple[int, str, str]]:
    """(server id, provider, ref) of the next `limit` live running servers after id `after` whose provider reports
    metrics."""
    reporting = [
        name for name in core.providers.names() if core.providers.get(name).features[Feature.METRICS].supported
    ]
    with core.db.read() as s:
        rows = s.execute(
            select(Server.id, Server.provider, Server.provider_ref)
            .where(
                Server.id > after,
                Server.deleted_at.is_(None),
                Server.status == ServerStatus.RUNNING,
                Server.provider_ref.is_not(None),
                Server.provider.in_(reporting),
            )
            .order_by(Server.id)
            .limit(limit)
        ).all()
    return [(r.id, r.provider, r.provider_ref) for r in rows]


async def sample(core: Core, at: datetime) -> int:
    """Read every running server's counters from its provider and record them as the sample at `at`, a batch of
    servers at a time; how many were recorded. A provider that fails for one server leaves a gap in that server's
    history, nothing more."""
    limit = asyncio.Semaphore(SAMPLING_CONCURRENCY)

    async def read(server_id: int, provider: str, ref: str) -> Reading | None:
        async with limit:
            try:
                return Reading(server_id, await core.providers.get(provider).metrics(ref))
            except Exception as error:  # noqa: BLE001 - a gap in one server's history
                log.info("no metrics for server %s this time: %s", server_id, error)
                return None

    recorded, after = 0, 0
    while True:
        targets = await core.db.run(_sampling_targets, core, after, SAMPLING_BATCH)
        readings = [r for r in await asyncio.gather(*(read(*t) for t in targets)) if r is not None]
        await core.db.run(record, core, at, readings)
        recorded += len(readings)
        if len(targets) < SAMPLING_BATCH:
            return recorded
        after = targets[-1][0]
        # A provider answering from memory (the simulator on SQLite) never suspends: let the requests in.
        await asyncio.sleep(0)


_PREVIOUS = (
    select(_samples.c.server_id, _samples.c.net_rx_total, _samples.c.net_tx_total)
    .where(
        _samples.c.resolution_s == RAW,
        _samples.c.at >= bindparam("since"),
        _samples.c.at < bindparam("at"),
        _samples.c.server_id.in_(bindparam("ids", expanding=True)),
    )
    .order_by(_samples.c.at)
)


def _since(previous_total: int | None, total: int) -> int:
    """Bytes since the previous sample; a total below the previous one means the machine restarted its count."""
    if previous_total is None:
        return 0
    return total - previous_total if total >= previous_total else total


def record(core: Core, at: datetime, readings: Sequence[Reading]) -> None:
    if not readings:
        return
    with core.db.begin() as conn:
        previous: dict[int, Any] = {}
        ids = [r.server_id for r in readings]
        for chunk in range(0, len(ids), IDS_PER_QUERY):
            window = {"since": at - PREVIOUS_WITHIN, "at": at, "ids": ids[chunk : chunk + IDS_PER_QUERY]}
            for row in conn.execute(_PREVIOUS, window):
                previous[row.server_id] = row  # ordered by time: the latest stays
        rows = []
        for reading in readings:
            m, before = reading.metrics, previous.get(reading.server_id)
            rows.append(
                {
                    "server_id": reading.server_id,
                    "resolution_s": RAW,
                    "at": at,
                    "cpu_percent": float(m.cpu_percent),
                    "memory_used_mb": m.memory_used_mb,
                    "disk_used_mb": m.disk_used_mb,
                    "net_in_bytes": _since(before.net_rx_total if before else None, m.net_rx_bytes),
                    "net_out_bytes": _since(before.net_tx_total if before else None, m.net_tx_bytes),
                    "net_rx_total": m.net_rx_bytes,
                    "net_tx_total": m.net_tx_bytes,
                    "uptime_s": m.uptime_s,
                }
            )
        conn.execute(insert(_samples), rows)


def roll_up(conn: Any, tick: datetime) -> str:
    """At the hour `tick`: the previous hour's samples of each server become one hourly row (average CPU and
    memory, the most disk, the bytes summed); samples older than a day and hours older than a month go."""
    start = tick - timedelta(hours=1)
    hour = (_samples.c.resolution_s == RAW, _samples.c.at >= start, _samples.c.at < tick)
    summary = (
        select(
            _samples.c.server_id,
            literal(HOUR_S, Integer),
            literal(start, _samples.c.at.type),
            func.avg(_samples.c.cpu_percent),
            cast(func.avg(_samples.c.memory_used_mb), Integer),
            func.max(_samples.c.disk_used_mb),
            func.sum(_samples.c.net_in_bytes),
            func.sum(_samples.c.net_out_bytes),
            func.max(_samples.c.net_rx_total),
            func.max(_samples.c.net_tx_total),
            func.max(_samples.c.uptime_s),
        )
        .where(*hour)
        .group_by(_samples.c.server_id)
    )
    columns = [c.name for c in _samples.c]
    rolled = conn.execute(insert(_samples).from_select(columns, summary)).rowcount
    pruned = conn.execute(
        delete(_samples).where(_samples.c.resolution_s == RAW, _samples.c.at < tick - KEEP_SAMPLES)
    ).rowcount
    pruned += conn.execute(
        delete(_samples).where(_samples.c.resolution_s == HOUR_S, _samples.c.at < tick - KEEP_HOURS)
    ).rowcount
    return f"{rolled} servers' hour rolled up, {pruned} old rows removed"


@dataclass(frozen=True)
class Point:
    at: datetime
    cpu_percent: float
    ram_percent: float
    disk_percent: float | None
    network_in_mb: float
    network_out_mb: float


@dataclass(frozen=True)
class Usage:
    """What CloudVPS shows: usage now (from the latest sample) and the history of the period asked for."""

    cpu_percent: float
    ram_percent: float
    disk_percent: float | None
    # Over the whole period.
    network_in_mb: float
    network_out_mb: float
    uptime_s: int
    start: datetime
    end: datetime
    resolution_s: int
    history: list[Point]


def _percent(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(min(100.0, 100.0 * part / whole), 1)


def usage(
    core: Core,
    principal: Principal,
    server_id: int,
    *,
    period: str = "hour",
    start: datetime | None = None,
    end: datetime | None = None,
) -> Usage:
    """The server's usage over `period` up to `end` (now), or between `start` and `end`: sample by sample when
    the span lies within the last day, else hour by hour."""
    now = utcnow()
    end = min(end or now, now)
    start = start or end - PERIODS[period]
    if start >= end:
        raise ValidationFailed("start_time must be before end_time", field="start_time")
    if end - start > KEEP_HOURS:
        raise ValidationFailed("A span of at most 31 days can be asked for", field="start_time")
    raw = start >= now - KEEP_SAMPLES
    resolution = RAW if raw else HOUR_S
    with core.db.read() as s:
        require_capability(core, s, principal, server_id, Feature.METRICS)
        server = get_server_in(core, s, principal, server_id)
        rows = s.execute(
            select(_samples)
            .where(
                _samples.c.server_id == server_id,
                _samples.c.resolution_s == resolution,
                _samples.c.at >= start,
                _samples.c.at < end,
            )
            .order_by(_samples.c.at)
        ).all()
        latest = s.execute(
            select(_samples)
            .where(_samples.c.server_id == server_id, _samples.c.resolution_s == RAW)
            .order_by(_samples.c.at.desc())
            .limit(1)
        ).first()
    ram_mb = float(server.specs.ram_gb or 0) * 1024
    disk_mb = float(server.specs.disk_gb or 0) * 1024
    history = [
        Point(
            at=r.at,
            cpu_percent=round(r.cpu_percent, 1),
            ram_percent=_percent(r.memory_used_mb, ram_mb) or 0.0,
            disk_percent=_percent(r.disk_used_mb, disk_mb),
            network_in_mb=round(r.net_in_bytes / MB, 3),
            network_out_mb=round(r.net_out_bytes / MB, 3),
        )
        for r in rows
    ]
    current = latest is not None and latest.at >= now - CURRENT_WITHIN and server.status == ServerStatus.RUNNING
    return Usage(
        cpu_percent=round(latest.cpu_percent, 1) if current and latest else 0.0,
        ram_percent=(_percent(latest.memory_used_mb, ram_mb) or 0.0) if current and latest else 0.0,
        disk_percent=_percent(latest.disk_used_mb, disk_mb) if latest else None,
        network_in_mb=round(sum(p.network_in_mb for p in history), 3),
        network_out_mb=round(sum(p.network_out_mb for p in history), 3),
        uptime_s=(latest.uptime_s or 0) if current and latest else 0,
        start=start,
        end=end,
        resolution_s=core.settings.metrics_sample_interval_s if raw else HOUR_S,
        history=history,
    )
