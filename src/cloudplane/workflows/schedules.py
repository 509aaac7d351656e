"""Periodic jobs (automatic backups; metering and invoice runs later): each tick of a job runs once, however many
processes run, and ticks missed while none ran are caught up.

Every process's dispatcher calls `run_due` at each sweep, in its own thread (never on the event loop). A tick is
run by the transaction that records it in `scheduled_runs`: the row's primary key (job, tick) lets one process
commit it, and what the job does commits with that record or not at all (a crash or an error midway leaves the tick
to the next sweep of any process). So a job does its work as writes in that transaction; long work is an operation
it records there (intent first), which the engine runs durably once the tick commits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import ScheduledRun, table_of, utcnow
from cloudplane.services import operations
from cloudplane.services.operations import Accepted
from cloudplane.workflows import engine

log = logging.getLogger(__name__)

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Missed ticks a job catching up on every tick runs per sweep: a long downtime is worked off over a few sweeps
# rather than in one long one.
CATCH_UP_PER_SWEEP = 24


@dataclass(frozen=True)
class Ran:
    """What one tick did: a few words for the record, and the operations it recorded (started once it commits).
    `then`: work that follows the commit on the workflow engine's loop, at most once (a crash or a failure loses
    it): for what a tick may miss, a metrics sample, never for what must not be lost."""

    summary: str
    operations: Sequence[Accepted] = field(default_factory=tuple)
    then: Callable[[], Awaitable[None]] | None = None


# A job's work for one tick, written in the tick's transaction.
JobBody = Callable[[Core, Session, datetime], Ran]


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    every: timedelta
    body: JobBody
    # How far back a tick missed while no process ran still runs, oldest first; None: every one (an hour of
    # metering must not be lost). Older ones are skipped.
    catch_up: timedelta | None
    # A setting (in seconds) that overrides `every`, for an operator (and the tests) to change.
    every_setting: str | None = None


_jobs: dict[str, PeriodicJob] = {}


def periodic(
    name: str, *, every: timedelta, catch_up: timedelta | None, every_setting: str | None = None
) -> Callable[[JobBody], JobBody]:
    """Register `body` to run once per tick of `every` (ticks fall on multiples of it, in UTC: hourly jobs on the
    hour), with the missed ticks of the last `catch_up` after a downtime (all of them: None). `every_setting`
    names a setting, in seconds, that overrides `every`."""
    _check_period(name, every)

    def register(body: JobBody) -> JobBody:
        job = PeriodicJob(name, every, body, catch_up, every_setting)
        if _jobs.get(name, job) != job:
            raise RuntimeError(f"two periodic jobs named {name!r}")
        _jobs[name] = job
        return body

    return register


def _check_period(name: str, every: timedelta) -> None:
    if every <= timedelta(0) or (timedelta(days=1) % every and every < timedelta(days=1)):
        raise ValueError(f"{name}: a period must divide a day evenly (an hour, 15 minutes...), not {every}")


def jobs() -> list[PeriodicJob]:
    return list(_jobs.values())


def configured(job: PeriodicJob, core: Core) -> PeriodicJob:
    """The job with the period this process's settings give it."""
    if job.every_setting is None:
        return job
    every = timedelta(seconds=getattr(core.settings, job.every_setting))
    _check_period(job.name, every)
    return replace(job, every=every)


def tick_of(moment: datetime, every: timedelta) -> datetime:
    """The latest tick of a job with this period at or before `moment`."""
    return moment - (moment - _EPOCH) % every


def due_ticks(job: PeriodicJob, last: datetime | None, now: datetime) -> list[datetime]:
    """The ticks to run now, oldest first, given the last one that ran. A job that never ran starts with the
    current tick: there is no history of it to catch up."""
    latest = tick_of(now, job.every)
    if last is None:
        return [latest]
    first = last + job.every
    if job.catch_up is not None:
        first = max(first, tick_of(latest - job.catch_up, job.every))
    if first > latest:
        return []
    return [first + job.every * n for n in range(min((latest - first) // job.every + 1, CATCH_UP_PER_SWEEP))]


def last_tick(core: Core, name: str) -> datetime | None:
    with core.db.read() as s:
        return s.scalar(select(func.max(ScheduledRun.tick_at)).where(ScheduledRun.job == name))


_INSERT_RUN = insert(table_of(ScheduledRun))


def run_tick(core: Core, job: PeriodicJob, tick: datetime, executor_id: str) -> Ran | None:
    """Run one tick of `job` unless some process ran it already (None then)."""
    try:
        with core.db.write() as s:
            # First, so that a second process blocks here (PostgreSQL) or on the file's lock (SQLite) until the
            # first commits, then finds the tick taken.
            s.execute(_INSERT_RUN, {"job": job.name, "tick_at": tick, "executor_id": executor_id, "ran_at": utcnow()})
            ran = job.body(core, s, tick)
            s.execute(
                update(ScheduledRun)
                .where(ScheduledRun.job == job.name, ScheduledRun.tick_at == tick)
                .values(summary=ran.summary)
            )
    except IntegrityError:
        return None  # another process ran it
    for op in ran.operations:
        operations.launch(op)
    if ran.then is not None:
        runner = engine.current()
        if runner is None:
            log.warning("periodic job %s: no workflow engine runs here for what follows its tick", job.name)
        else:
            runner.spawn(ran.then, f"{job.name} {tick.isoformat()}")
    log.info("periodic job %s ran its tick %s: %s", job.name, tick.isoformat(), ran.summary)
    return ran


# The record of ticks is kept this long (a job's latest tick is kept whatever its age: catching up starts there).
KEEP_RUNS = timedelta(days=7)


@periodic("schedules-prune", every=timedelta(days=1), catch_up=timedelta(0))
def prune_runs(core: Core, session: Session, tick: datetime) -> Ran:
    """Remove the records of ticks older than KEEP_RUNS, but each job's latest."""
    runs = table_of(ScheduledRun)
    same_job = runs.alias("same_job")
    latest = select(func.max(same_job.c.tick_at)).where(same_job.c.job == runs.c.job).scalar_subquery()
    removed = session.execute(delete(runs).where(runs.c.tick_at < tick - KEEP_RUNS, runs.c.tick_at < latest))
    return Ran(f"{cast(CursorResult[Any], removed).rowcount} old tick records removed")


def run_due(core: Core, executor_id: str, now: datetime) -> dict[tuple[str, datetime], Ran]:
    """Run every job's due ticks that no process ran yet; what each tick that ran here did. A job that fails is
    logged and tried again at the next sweep; the others run meanwhile."""
    done: dict[tuple[str, datetime], Ran] = {}
    for job in (configured(j, core) for j in jobs()):
        try:
            for tick in due_ticks(job, last_tick(core, job.name), now):
                ran = run_tick(core, job, tick, executor_id)
                if ran is not None:
                    done[(job.name, tick)] = ran
        except Exception:  # noqa: BLE001 - one failing job must not stop the others; its tick stays due
            log.warning("periodic job %s failed; it runs again at the next sweep", job.name, exc_info=True)
    return done
