"""The dispatcher: starts committed operations, and finishes what dead processes left.

Every process runs one, in a thread of its own (its work is blocking database calls; it never runs on the event
loop). Right after a request commits, `hand_off` starts the operation's workflow; if that fails, or the process
dies first, the operation stays `pending` and the next sweep, in any process, starts it. Each sweep also beats
this process's heartbeat, and when another executor's heartbeat is older than `executor_stale_after_s`, one live
process (by a conditional UPDATE) claims it and resumes its unfinished workflows from their last checkpoint.
Starting a workflow twice is harmless: its id is the operation's id, and DBOS runs it once.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, cast

from dbos import DBOS
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from cloudplane.core import Core
from cloudplane.db.tables import Executor, Operation, utcnow
from cloudplane.workflows import engine

log = logging.getLogger(__name__)

# A freshly committed operation is its request's to start; the sweep leaves it that long.
PENDING_GRACE_S = 1.0

_dispatcher: Dispatcher | None = None


def db_now(session: Session) -> datetime:
    """The database's clock on PostgreSQL (processes on several hosts compare heartbeats with one clock);
    SQLite's is this host's, the only one that can share the file."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now()))  # type: ignore[return-value]
    return utcnow()


def hand_off(op_id: str, kind: str) -> None:
    """Start a committed operation's workflow now. Never raises: a failure leaves it to the sweep."""
    try:
        engine.start_operation(op_id, kind)
    except Exception:  # noqa: BLE001 - the request has committed; the sweep starts it
        log.warning("could not start operation %s now; the dispatcher's sweep will", op_id, exc_info=True)


class Dispatcher:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.executor_id = engine.executor_id(core)
        self.interval_s = core.settings.dispatch_interval_s
        self.stale_after = timedelta(seconds=core.settings.executor_stale_after_s)
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
        self.take_over_dead()

    def heartbeat(self) -> None:
        with self.core.db.write() as s:
            now = db_now(s)
            result = s.execute(
                update(Executor).where(Executor.id == self.executor_id).values(heartbeat_at=now, taken_over_by=None)
            )
            if cast(CursorResult[Any], result).rowcount == 0:
                s.add(Executor(id=self.executor_id, started_at=now, heartbeat_at=now))

    def start_pending(self, grace_s: float = PENDING_GRACE_S) -> int:
        """Start every operation pending for longer than `grace_s`; returns how many were handed off."""
        with self.core.db.read() as s:
            before = db_now(s) - timedelta(seconds=grace_s)
            pending = s.execute(
                select(Operation.id, Operation.kind)
                .where(Operation.status == "pending", Operation.created_at < before)
                .order_by(Operation.created_at)
                .limit(500)
            ).all()
        for op_id, kind in pending:
            hand_off(op_id, kind)
        return len(pending)

    def take_over_dead(self) -> list[str]:
        """Claim each executor whose heartbeat stopped and resume its unfinished workflows here; returns the
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
                claimed = cast(CursorResult[Any], result).rowcount
            if claimed != 1:
                continue  # another live process got there first, or it came back
            workflows = DBOS.list_workflows(
                status="PENDING", executor_id=executor_id, load_input=False, load_output=False
            )
            log.warning(
                "executor %s stopped beating; resuming its %d unfinished workflows here", executor_id, len(workflows)
            )
            for workflow in workflows:
                DBOS.resume_workflow(workflow.workflow_id)
            taken.append(executor_id)
        return taken


def start(core: Core) -> Dispatcher:
    global _dispatcher
    stop()
    _dispatcher = Dispatcher(core)
    _dispatcher.start()
    # Whatever this process committed but never started before it stopped.
    _dispatcher.start_pending(grace_s=0)
    return _dispatcher


def stop() -> None:
    global _dispatcher
    if _dispatcher is not None:
        _dispatcher.stop()
        _dispatcher = None


def current() -> Dispatcher | None:
    return _dispatcher
