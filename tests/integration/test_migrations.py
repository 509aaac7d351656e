"""The Alembic migrations build exactly the schema the ORM tables declare, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, create_engine, select, text

from cloudplane.db.tables import Base
from tests.conftest import scratch_database


# Alembic cannot compare indexes on expressions (the servers' state and name orders); test_list_plans.py shows each
# one exists and serves the queries it was made for.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_migrated_database_matches_the_models(core) -> None:
    engine = create_engine(core.settings.database_url)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    # Tables of others in the same database (DBOS's schema, the simulators' stores) are not ours to compare.
    ours = [d for d in differences if not (isinstance(d, tuple) and d[0] == "remove_table")]
    # Alembic compares indexes on expressions poorly (skipped on SQLite, told apart by their text on PostgreSQL).
    on_expressions = {
        index.name for table in Base.metadata.tables.values() for index in table.indexes if index.expressions
        if any(not isinstance(e, Column) for e in index.expressions)
    }  # fmt: skip
    ours = [d for d in ours if not (d[0] in ("add_index", "remove_index") and d[1].name in on_expressions)]
    assert on_expressions and ours == []


def test_json_that_was_kept_as_text_reads_back_as_json_after_0007(tmp_path) -> None:
    """Rows written before migration 0007 (JSON in text columns) read back as JSON values, on either database."""
    from cloudplane.db.migrate import upgrade
    from cloudplane.db.tables import App, Operation, Server

    with scratch_database(tmp_path, "migration") as url:
        upgrade(url, "0006")
        engine = create_engine(url)
        app_id, op_id = str(uuid.uuid4()), str(uuid.uuid4())
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (name, email, tier, status, balance, currency, created_at) "
                    "VALUES ('a', 'a@example.com', 'free', 'active', 0, 'USD', CURRENT_TIMESTAMP)"
                )
            )
            account = conn.scalar(text("SELECT id FROM accounts"))
            conn.execute(
                text(
                    "INSERT INTO servers (account_id, label, hostname, status, provider, created_at, updated_at, "
                    "provider_data) VALUES (:a, 's', 's', 'running', 'vast_ai', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP, :data)"
                ),
                {"a": account, "data": '{"image": "pytorch", "ssh_port": 22}'},
            )
            server = conn.scalar(text("SELECT id FROM servers"))
            conn.execute(
                text(
                    "INSERT INTO operations (id, account_id, kind, target_type, target_id, server_id, status, "
                    "progress, params, created_at, updated_at) VALUES (:id, :a, 'create', 'server', :s, :s, "
                    "'pending', 0, :params, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": op_id, "a": account, "s": server, "params": '{"root_password_hash": "$6$x"}'},
            )
            conn.execute(
                text(
                    "INSERT INTO apps (id, account_id, name, branch, environment_variables, port, cpu_limit, "
                    "memory_limit, storage_limit, gpu_enabled, replicas, status, created_at, updated_at) VALUES "
                    "(:id, :a, 'app', 'main', :env, 8000, 500, 512, 1024, false, 1, 'stopped', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": app_id, "a": account, "env": '{"DEBUG": "1"}'},
            )
        engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.scalar(select(Server.provider_data)) == {"image": "pytorch", "ssh_port": 22}
            assert conn.scalar(select(Operation.params)) == {"root_password_hash": "$6$x"}
            assert conn.scalar(select(App.environment_variables)) == {"DEBUG": "1"}
        engine.dispose()
