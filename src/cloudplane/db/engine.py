"""Engines and sessions for SQLite (WAL, busy timeout, foreign keys, BEGIN IMMEDIATE for writes) and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, Executable, Row, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 15_000
# How often SQLite asks a budgeted read whether its time is up, in virtual-machine steps: a few microseconds apart.
BUDGET_CHECK_STEPS = 1000


class ReadBudget:
    """The time a read may take on the event loop. Installed as SQLite's progress handler on the connections the
    read checks out: once the time is up, SQLite interrupts the statement (OperationalError "interrupted") and
    `tripped` tells the caller to run the read again where it blocks nobody."""

    __slots__ = ("deadline", "tripped")

    def __init__(self, seconds: float) -> None:
        self.deadline = perf_counter() + seconds
        self.tripped = False

    def __call__(self) -> int:
        if perf_counter() < self.deadline:
            return 0
        self.tripped = True
        return 1


# A pooled PostgreSQL connection idle this long is tested before use (see _ping_idle_connections).
IDLE_PING_AFTER_S = 5.0
# Threads for Database.run on PostgreSQL.
DB_THREADS = 16

P = ParamSpec("P")
T = TypeVar("T")

_read_budget: ContextVar[ReadBudget | None] = ContextVar("read_budget", default=None)


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # As many as the threads that may ask at once (the request threadpool has 40): an overflow
        # connection is closed on return, and opening one per request costs more than the query.
        pool_size=40,
        max_overflow=10,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN below is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    # A deferred transaction that reads, then writes, can fail with "database is locked" without waiting
    # when another writer got in between; taking the write lock up front makes writers queue instead.
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver: every transaction begins here, and SQLAlchemy's execute path costs more than
        # the BEGIN itself (no statement events or results are wanted for it).
        conn.connection.driver_connection.execute(begin)  # type: ignore[union-attr]

    if not immediate:
        _budget_reads(engine)
    return engine


def _budget_reads(engine: Engine) -> None:
    """Connections checked out under `Database.read_budget` carry its progress handler until they are returned."""

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        budget = _read_budget.get()
        if budget is not None:
            dbapi_conn.set_progress_handler(budget, BUDGET_CHECK_STEPS)
            record.info["budgeted"] = True

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_conn: Any, record: Any) -> None:
        if record.info.pop("budgeted", False) and dbapi_conn is not None:
            dbapi_conn.set_progress_handler(None, 0)


def _ping_idle_connections(engine: Engine) -> None:
    """Test a pooled PostgreSQL connection before use only when it has sat idle for IDLE_PING_AFTER_S: one that
    died meanwhile (a database restart, an idle timeout) is then replaced before the caller sees it fail.
    SQLAlchemy's `pool_pre_ping` pings at every checkout: a round trip more per transaction, which under a burst
    of creates (a dozen transactions each) cost a fifth of the throughput (bench_writes.py --only burst). This is
    the "pessimistic" recipe of SQLAlchemy's pooling docs, limited to connections that may have gone stale."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_AFTER_S:
            return
        try:
            with dbapi_conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as error:  # noqa: BLE001 - any failure means this connection is of no use
            # The pool discards the connection and checks out another (a new one when none is left).
            raise DisconnectionError(f"stale pooled connection: {error}") from error


def _enable_wal(url: str) -> None:
    """WAL is a property of the database file, so it is set once, not on every new connection (it takes a lock)."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    engine.dispose()


_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _file_write_lock(url: str) -> threading.RLock:
    """One lock per SQLite file in this process, however many Database objects open it. Re-entrant, so a thread
    that nests a write in a write (a mistake SQLite itself would answer with a busy wait) does not deadlock here."""
    path = url.split("///", 1)[1] if "///" in url else url
    key = path if path == ":memory:" else str(Path(path).resolve())
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.RLock())


class Database:
    """The application database: `read()` and `write()` give sessions that commit or roll back on exit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            _enable_wal(url)
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:
            self.write_engine = create_engine(url, pool_size=10, max_overflow=20)
            _ping_idle_connections(self.write_engine)
            # Reads on the same pool, each statement its own transaction: under READ COMMITTED every statement of a
            # transaction sees its own snapshot anyway, so a read-only BEGIN ... ROLLBACK buys nothing but two round
            # trips (a third of a create's round trips before; bench_writes.py --only burst).
            self.read_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock = _file_write_lock(url) if self.is_sqlite else None
        # Database.run's threads on PostgreSQL (the loop's default executor has cpu_count + 4: six on two cores, too
        # few for a burst of workflows each waiting on round trips).
        self._executor = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="cloudplane-db")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A blocking call on this database, from the event loop: inline on SQLite, where a query takes microseconds
        (less than handing it to a thread and back); in a thread on PostgreSQL, where each query is a network round
        trip the loop must not wait on (a workflow's or a provider's, beside every request of the process)."""
        if self.is_sqlite:
            return fn(*args, **kwargs)
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A plain connection for read-only Core queries on hot paths (no ORM session overhead)."""
        with self.read_engine.connect() as conn:
            yield conn

    @contextmanager
    def read_budget(self, seconds: float) -> Iterator[ReadBudget]:
        """SQLite: the reads made inside (from this context) are interrupted once `seconds` have passed, and the
        budget says so (`tripped`). PostgreSQL: nothing is interrupted."""
        budget = ReadBudget(seconds)
        token = _read_budget.set(budget)
        try:
            yield budget
        finally:
            _read_budget.reset(token)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction. On SQLite, writers of this process queue on a lock of the file's before they begin:
        SQLite admits one writer at a time, and a writer that finds the file locked sleeps in its busy handler
        (1, 2, 5, 10 ... ms) however soon the lock is free, which under a burst of writes costs more than the writes.
        Other processes sharing the file still wait in the busy handler."""
        lock = self._write_lock
        if lock is None:
            with self._write() as session, session.begin():
                yield session
            return
        with lock, self._write() as session, session.begin():
            yield session

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction on a plain connection, for prebuilt Core statements on hot paths (no ORM session),
        queued on the same lock as `write()`."""
        lock = self._write_lock or nullcontext()
        with lock, self.write_engine.begin() as conn:
            yield conn

    def write_alone(self, statement: Executable, params: dict[str, Any]) -> Sequence[Row[Any]]:
        """One write statement that is a transaction of its own, and the rows it returns (RETURNING). PostgreSQL:
        sent on an autocommit connection, one round trip where BEGIN and COMMIT would make it three. SQLite: a write
        transaction queued on the file's lock like any other."""
        if self.is_sqlite:
            with self.begin() as conn:
                return conn.execute(statement, params).all()
        with self.read_engine.connect() as conn:  # AUTOCOMMIT on PostgreSQL
            return conn.execute(statement, params).all()

    def dispose(self) -> None:
        self._executor.shutdown(wait=False)
        self.write_engine.dispose()
        if self.is_sqlite:
            self.read_engine.dispose()
