"""The dispatcher: starts committed operations, and finishes what stopped or dead processes left.

Every process runs one, in a thread of its own (its work is blocking database calls; it never runs on the event
loop). Right after a request commits, `hand_off` gives the operation to this process's engine; if that fails, or
the process dies first, the operation stays `pending` and the next sweep, in any process, starts it. Each sweep
also beats this process's heartbeat, runs again any operation this executor holds but does not run (its previous
life's, or one whose run stopped on a database error), and when another executor's heartbeat is older than
`executor_stale_after_s`, one live process claims that executor (a conditional UPDATE) and its operations, and runs
them from where they got to. Last, it runs the periodic jobs' due ticks (workflows/schedules.py). Handing an
operation over twice is harmless: the engine runs each once, and its claim is a conditional UPDATE.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from cloudplane.db.tables import Executor, Operation, utcnow
from cloudplane.workflows import engine
from cloudplane.workflows.engine import Engine

log = logging.getLogger(__name__)

# A freshly committed operation is its request's to start; the sweep leaves it that long.
PENDING_GRACE_S = 1.0
# Operations handed to the engine per sweep and query.
BATCH = 500

_dispatcher: Dispatcher | None = None


def db_now(session: Session) -> datetime:
    """The database's clock on PostgreSQL (processes on several hosts compare heartbeats with one clock);
    SQLite's is this host's, the only one that can share the file."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now()))  # type: ignore[return-value]
    return utcnow()


def hand_off(op_id: str, kind: str, *, held: bool = False) -> None:
    """Start a committed operation's workflow now (`held`: recorded as this executor's). Never raises: a failure
    leaves it to the sweep, which starts what is pending and runs again what this executor holds."""
    try:
        engine.start_operation(op_id, kind, held=held)
    except Exception:  # noqa: BLE001 - the request has committed; the sweep starts it
        log.warning("could not start operation %s now; the dispatcher's sweep will", op_id, exc_info=True)


class Dispatcher:
    def __init__(self, runner: Engine) -> None:
        self.engine = runner
        self.core = runner.core
        self.executor_id = runner.executor_id
        self.interval_s = self.core.settings.dispatch_interval_s
        self.stale_after = timedelta(seconds=self.core.settings.executor_stale_after_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cloudplane-dispatcher", daemon=True)

    def start(self) -> None:
        self.register()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def register(self) -> None:
        """This process's row: a fresh life, so a heartbeat that went stale before it restarted is its own again."""
        with self.core.db.write() as s:
            now = db_now(s)
            executor = s.get(Executor, self.executor_id)
            if executor is None:
                s.add(Executor(id=self.executor_id, started_at=now, heartbeat_at=now))
            else:
                executor.started_at = executor.heartbeat_at = now
                executor.taken_over_by = executor.taken_over_at = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failing sweep (database away) is retried next interval
                log.warning("dispatcher sweep failed; retrying in %ss", self.interval_s, exc_info=True)

    def sweep(self) -> None:
        self.heartbeat()
        self.start_pending()
        self.resume_held()
        self.take_over_dead()
        self.run_schedules()

    def run_schedules(self) -> None:
        """Run the periodic jobs' ticks that are due and no process ran yet (workflows/schedules.py)."""
        from cloudplane.workflows import schedules

        with self.core.db.read() as s:
            now = db_now(s)
        schedules.run_due(self.core, self.executor_id, now)

    def heartbeat(self) -> None:
        with self.core.db.write() as s:
            now = db_now(s)
            result = s.execute(
                update(Executor).where(Executor.id == self.executor_id).values(heartbeat_at=now, taken_over_by=None)
            )
            if cast(CursorResult[Any], result).rowcount == 0:
                s.add(Executor(id=self.executor_id, started_at=now, heartbeat_at=now))

    def _submit(self, op_ids: list[str]) -> int:
        if op_ids:
            self.engine.submit(op_ids)
        return len(op_ids)

    def start_pending(self, grace_s: float = PENDING_GRACE_S) -> int:
        """Start every operation pending for longer than `grace_s`; returns how many were handed over."""
        with self.core.db.read() as s:
            before = db_now(s) - timedelta(seconds=grace_s)
            pending = s.scalars(
                select(Operation.id)
                .where(Operation.status == "pending", Operation.created_at < before)
                .order_by(Operation.created_at)
                .limit(BATCH)
            ).all()
        return self._submit(list(pending))

    def adopt_unheld(self) -> None:
        """Operations left running by a version of Cloudplane that ran them in another engine hold no executor id:
        they become this executor's (one process wins each), to be run again from where they got to."""
        with self.core.db.write() as s:
            s.execute(
                update(Operation)
                .where(Operation.status == "running", Operation.executor_id.is_(None))
                .values(executor_id=self.executor_id)
            )

    def resume_held(self) -> int:
        """Run again what this executor holds (runs already going are left alone by the engine); returns how many
        were handed over."""
        with self.core.db.read() as s:
            held = s.scalars(
                select(Operation.id)
                .where(Operation.executor_id == self.executor_id, Operation.status == "running")
                .order_by(Operation.created_at)
                .limit(BATCH)
            ).all()
        return self._submit(list(held))

    def take_over_dead(self) -> list[str]:
        """Claim each executor whose heartbeat stopped and run its unfinished operations here; returns the
        executors taken over."""
        with self.core.db.read() as s:
            cutoff = db_now(s) - self.stale_after
            dead = s.scalars(
                select(Executor.id).where(
                    Executor.id != self.executor_id, Executor.heartbeat_at < cutoff, Executor.taken_over_by.is_(None)
                )
            ).all()
        taken = []
        for executor_id in dead:
            with self.core.db.write() as s:
                result = s.execute(
                    update(Executor)
                    .where(Executor.id == executor_id, Executor.heartbeat_at < cutoff, Executor.taken_over_by.is_(None))
                    .values(taken_over_by=self.executor_id, taken_over_at=db_now(s))
                )
                if cast(CursorResult[Any], result).rowcount != 1:
                    continue  # another live process got there first, or it came back
                moved = s.execute(
                    update(Operation)
                    .where(Operation.executor_id == executor_id, Operation.status == "running")
                    .values(executor_id=self.executor_id)
                )
            log.warning(
                "executor %s stopped beating; running its %d unfinished operations here",
                executor_id,
                cast(CursorResult[Any], moved).rowcount,
            )
            taken.append(executor_id)
        if taken:
            self.resume_held()
        return taken


def start(runner: Engine) -> Dispatcher:
    """Start this process's dispatcher, first handing the engine what this executor left unfinished and what was
    committed but never started."""
    global _dispatcher
    stop()
    _dispatcher = Dispatcher(runner)
    _dispatcher.start()
    _dispatcher.adopt_unheld()
    _dispatcher.resume_held()
    _dispatcher.start_pending(grace_s=0)
    return _dispatcher


def stop() -> None:
    global _dispatcher
    if _dispatcher is not None:
        _dispatcher.stop()
        _dispatcher = None


def current() -> Dispatcher | None:
    return _dispatcher
