"""The Alembic migrations build exactly the schema the ORM tables declare, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from cloudplane.db.tables import Base


def test_migrated_database_matches_the_models(core) -> None:
    engine = create_engine(core.settings.database_url)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    # Tables of others in the same database (DBOS's schema, the simulators' stores) are not ours to compare.
    ours = [d for d in differences if not (isinstance(d, tuple) and d[0] == "remove_table")]
    assert ours == []
