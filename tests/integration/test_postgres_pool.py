"""PostgreSQL connections: a pooled connection that died while idle is replaced before anyone uses it, and a blocking
database call made from the event loop (`Database.run`) leaves the loop free meanwhile."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from sqlalchemy import text

from cloudplane.db import engine as db_engine
from cloudplane.db.engine import Database

pytestmark = pytest.mark.skipif(
    not os.environ.get("CLOUDPLANE_DATABASE_URL", "").startswith("postgresql"),
    reason="PostgreSQL-only: it runs in the PostgreSQL pass of the suite",
)


def _backend_pid(db: Database) -> int:
    with db.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_pooled_connection_killed_while_idle_is_replaced_before_use(monkeypatch) -> None:
    db = Database(os.environ["CLOUDPLANE_DATABASE_URL"])
    try:
        first = _backend_pid(db)  # the pool now holds this connection, idle
        killer = Database(os.environ["CLOUDPLANE_DATABASE_URL"])
        with killer.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
        killer.dispose()
        # Idle long enough to be tested at checkout (rather than wait IDLE_PING_AFTER_S).
        monkeypatch.setattr(db_engine, "IDLE_PING_AFTER_S", 0.0)
        second = _backend_pid(db)  # without the test at checkout: "terminating connection due to administrator command"
        assert second != first
    finally:
        db.dispose()


async def test_a_blocking_call_through_run_leaves_the_loop_free() -> None:
    db = Database(os.environ["CLOUDPLANE_DATABASE_URL"])
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    def slow_query() -> int:
        with db.connect() as conn:
            return int(conn.execute(text("SELECT 7 FROM pg_sleep(0.3)")).scalar_one())

    ticker = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        assert await db.run(slow_query) == 7
        assert time.monotonic() - started >= 0.3
        # The loop went on while the query slept in PostgreSQL: on the loop itself it would have ticked once.
        assert ticks >= 5
    finally:
        ticker.cancel()
        db.dispose()
