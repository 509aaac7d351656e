"""Every page of a list is found from an index alone (services/pages.py): on a few thousand servers, with the
databases' statistics taken, each shape a face can ask for is planned on the index db/tables.py made for it, on
SQLite and on PostgreSQL. The state word's expression must be the very one its index was built on, or neither
database would match the two."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, Select, create_engine, insert

from cloudplane.db.migrate import upgrade
from cloudplane.db.tables import Account, Server, ServerSSHKey, Snapshot, SSHKey
from cloudplane.services import gpu, servers
from tests.conftest import scratch_database

SERVERS = 5000


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A database of its own holding one account's fleet: mostly running, some stopped or busy, a few rented GPU
    instances, a few deleted."""
    with scratch_database(tmp_path_factory.mktemp("plans"), "plans") as url:
        upgrade(url)
        engine = create_engine(url)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(insert(Account).values(id=1, name="a", email="a@example.com", created_at=now))
            conn.execute(
                insert(Server),
                [
                    {
                        "account_id": 1, "label": f"Server {i}", "hostname": f"s{i}", "provider": "simulator",
                        "status": "stopped" if i % 10 == 0 else "running",
                        "task_state": "rebooting" if i % 97 == 0 else None,
                        "offer_id": f"offer-{i}" if i % 100 == 0 else None,
                        "deleted_at": now if i % 50 == 1 else None,
                        "created_at": now - timedelta(seconds=SERVERS - i), "updated_at": now,
                    }
                    for i in range(SERVERS)
                ],
            )  # fmt: skip
            # One server with many snapshots, another with many keys: a page's own few must not cost a walk of them.
            conn.execute(
                insert(Snapshot),
                [
                    {"account_id": 1, "server_id": SERVERS, "label": f"s{i}", "status": "available", "created_at": now}
                    for i in range(SERVERS)
                ],
            )
            conn.execute(
                insert(SSHKey),
                [
                    {"id": i + 1, "account_id": 1, "title": f"k{i}", "public_key": "ssh-ed25519 AAAA", "key_type": "ssh-ed25519",
                     "fingerprint": f"SHA256:{i}", "created_at": now}
                    for i in range(SERVERS)
                ],
            )  # fmt: skip
            conn.execute(
                insert(ServerSSHKey), [{"server_id": SERVERS - 1, "ssh_key_id": i + 1} for i in range(SERVERS)]
            )
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM ANALYZE"
            )
        try:
            yield engine
        finally:
            engine.dispose()


def plan_of(conn: Connection, stmt: Select[Any], params: dict[str, Any]) -> str:
    """How the database would run `stmt` with `params`."""
    state = stmt.compile(dialect=conn.dialect).construct_expanded_state(params)
    if conn.dialect.name == "sqlite":
        args = tuple(state.parameters[name] for name in state.positiontup or ())
        return "\n".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + state.statement, args))
    return "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + state.statement, state.parameters))


PARAMS = {"tenant_account_id": 1, "limit": 20, "offset": 2000, "state": "running"}


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
@pytest.mark.parametrize("from_end", [False, True], ids=["from-start", "from-end"])
def test_each_server_list_is_paged_from_its_index(fleet, filtered, sort, descending, index, from_end) -> None:
    # A page past the middle walks the same index backwards (services/pages.py `window`).
    page, _ = servers._list_statements(filtered, sort, descending, from_end)
    with fleet.connect() as conn:
        plan = plan_of(conn, page, PARAMS)
    assert index in plan, plan


@pytest.mark.parametrize("from_end", [False, True], ids=["from-start", "from-end"])
def test_gpu_instances_are_paged_from_the_rented_servers_alone(fleet, from_end) -> None:
    with fleet.connect() as conn:
        assert "ix_servers_account_rented" in plan_of(conn, gpu._INSTANCE_PAGES[from_end], PARAMS | {"offset": 20})
        assert "ix_servers_account_rented" in plan_of(conn, gpu._INSTANCE_COUNT, PARAMS)


def test_a_pages_keys_and_snapshots_are_found_by_their_servers(fleet) -> None:
    page_ids = {"ids": list(range(1, 21))}  # servers with none: the many are other servers'
    with fleet.connect() as conn:
        snapshots = plan_of(conn, servers._SNAPSHOTS_OF, page_ids)
        keys = plan_of(conn, servers._KEYS_OF, page_ids)
    assert "ix_snapshots_server_" in snapshots, snapshots
    assert "SCAN ssh_keys" not in keys and "Seq Scan on ssh_keys" not in keys, keys
