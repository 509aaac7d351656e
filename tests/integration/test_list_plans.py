"""Every page of a list is found from an index alone (services/pages.py): each shape a face can ask for is served
by the index db/tables.py made for it, on SQLite and on PostgreSQL. The state word's expression must be the very
one its index was built on, or no database would match the two."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, Select

from cloudplane.services import gpu, servers


def plan_of(conn: Connection, stmt: Select[Any], params: dict[str, Any]) -> str:
    compiled = stmt.compile(dialect=conn.dialect)
    values = compiled.construct_params(params)
    if conn.dialect.name == "sqlite":
        args = tuple(values[name] for name in compiled.positiontup or ())
        return "\n".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), args))
    # The suite's tables are small enough that PostgreSQL would rather read them whole; the question is only
    # whether the index can serve the query at all.
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + str(compiled), values))


PARAMS = {"tenant_account_id": 1, "limit": 20, "offset": 40, "state": "running"}


@pytest.mark.parametrize(
    ("filtered", "sort", "descending", "index"),
    [
        (False, "id", False, "ix_servers_account_live"),
        (False, "created_at", True, "ix_servers_account_created"),
        (False, "created_at", False, "ix_servers_account_created"),
        (False, "label", False, "ix_servers_account_label"),
        (False, "state", True, "ix_servers_account_state"),
        (True, "created_at", True, "ix_servers_account_state"),
        (True, "state", False, "ix_servers_account_state"),
        (True, "label", True, "ix_servers_account_state_label"),
    ],
)
def test_each_server_list_is_paged_from_its_index(core, filtered, sort, descending, index) -> None:
    page, count = servers._list_statements(filtered, sort, descending)
    with core.db.connect() as conn, conn.begin():
        assert index in plan_of(conn, page, PARAMS)
        assert "ix_servers_account_" in plan_of(conn, count, PARAMS)


def test_gpu_instances_are_paged_from_the_rented_servers_alone(core) -> None:
    with core.db.connect() as conn, conn.begin():
        assert "ix_servers_account_rented" in plan_of(conn, gpu._INSTANCE_PAGE, PARAMS)
        assert "ix_servers_account_rented" in plan_of(conn, gpu._INSTANCE_COUNT, PARAMS)
