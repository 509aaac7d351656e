"""QUALITY.md: on SQLite, 16 concurrent writers x 1000 transactions and not one "database is locked"."""

from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select, update

from cloudplane.db.engine import Database

WRITERS = 16
TRANSACTIONS = 1000


@pytest.mark.skipif(
    os.environ.get("CLOUDPLANE_DATABASE_URL", "").startswith("postgresql"),
    reason="SQLite-only check; it runs in the SQLite pass of the suite",
)
def test_sixteen_writers_never_see_database_is_locked(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'writers.sqlite'}")
    metadata = MetaData()
    counters = Table("counters", metadata, Column("id", Integer, primary_key=True), Column("n", Integer))
    log = Table("log", metadata, Column("id", Integer, primary_key=True), Column("writer", Integer))
    metadata.create_all(db.write_engine)
    with db.write() as s:
        s.execute(insert(counters).values(id=1, n=0))
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            for _ in range(TRANSACTIONS):
                # Read, then write, in one transaction: the pattern that fails with deferred transactions.
                with db.write() as s:
                    n = s.execute(select(counters.c.n).where(counters.c.id == 1)).scalar_one()
                    s.execute(update(counters).where(counters.c.id == 1).values(n=n + 1))
                    s.execute(insert(log).values(writer=index))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.read() as s:
        assert s.execute(select(counters.c.n)).scalar_one() == WRITERS * TRANSACTIONS
        assert s.execute(select(func.count()).select_from(log)).scalar_one() == WRITERS * TRANSACTIONS
    db.dispose()


def test_write_sessions_take_the_write_lock_up_front(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'lock.sqlite'}")
    with db.write() as s:
        in_tx = s.connection().exec_driver_sql("SELECT 1").scalar()
        assert in_tx == 1
        # A second connection cannot begin a write while this one holds it.
        other = db.write_engine.raw_connection()
        try:
            other.execute("PRAGMA busy_timeout=0")
            with pytest.raises(Exception, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    db.dispose()
