"""Indexes that make every page of a list cost the same: each order a face offers for servers (creation time, name,
state, with and without a state filter), GPU instances, operations newest first (and by status), apps newest
first, a server's snapshots and an account's SSH keys. A page's ids are read from one of these alone (services/pages.py).

The state index is on the state word's expression as db/tables.py builds it (SERVER_STATE_WORD) with the visible
tasks of this revision; a change to that set needs a migration that rebuilds the two state indexes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

STATE_WORD = sa.text(
    "(CASE WHEN task_state IN ('deleting', 'rebooting', 'restoring', 'starting', 'stopping') "
    "THEN task_state ELSE status END)"
)
LIVE = sa.text("deleted_at IS NULL")
LIVE_RENTED = sa.text("deleted_at IS NULL AND offer_id IS NOT NULL")
# Partial on the live servers rather than led by `deleted_at` (as 0001's ix_servers_account_live was): PostgreSQL
# orders by an index's columns only after equalities, and IS NULL is not one. It ends each one too: SQLite counts an
# index as covering only if it holds every column the query names.
SERVER_INDEXES: dict[str, list[str | sa.TextClause]] = {
    "ix_servers_account_live": ["id"],
    "ix_servers_account_created": ["created_at", "id"],
    "ix_servers_account_label": [sa.text("lower(label)"), "id", "label"],
    "ix_servers_account_state": [STATE_WORD, "created_at", "id", "status", "task_state"],
    "ix_servers_account_state_label": [STATE_WORD, sa.text("lower(label)"), "id", "label", "status", "task_state"],
}


def upgrade() -> None:
    op.drop_index("ix_servers_account_live", table_name="servers")
    for name, columns in SERVER_INDEXES.items():
        op.create_index(
            name, "servers", ["account_id", *columns, "deleted_at"], sqlite_where=LIVE, postgresql_where=LIVE
        )
    op.create_index(
        "ix_servers_account_rented", "servers", ["account_id", "id", "deleted_at"], sqlite_where=LIVE_RENTED,
        postgresql_where=LIVE_RENTED,
    )  # fmt: skip
    op.drop_index("ix_operations_account_created", table_name="operations")
    op.create_index("ix_operations_account_created", "operations", ["account_id", "created_at", "id"])
    op.create_index("ix_operations_account_status", "operations", ["account_id", "status", "created_at", "id"])
    op.drop_index("ix_apps_account_created", table_name="apps")
    op.create_index("ix_apps_account_created", "apps", ["account_id", "created_at", "id"])
    op.create_index(
        "ix_snapshots_server_live", "snapshots", ["server_id", "id", "account_id", "deleted_at"], sqlite_where=LIVE,
        postgresql_where=LIVE,
    )  # fmt: skip
    op.create_index("ix_ssh_keys_account_key", "ssh_keys", ["account_id", "id"])
    op.drop_index("ix_ssh_keys_account_id", table_name="ssh_keys")  # a prefix of the one above


def downgrade() -> None:
    op.create_index("ix_ssh_keys_account_id", "ssh_keys", ["account_id"])
    op.drop_index("ix_ssh_keys_account_key", table_name="ssh_keys")
    op.drop_index("ix_snapshots_server_live", table_name="snapshots")
    op.drop_index("ix_apps_account_created", table_name="apps")
    op.create_index("ix_apps_account_created", "apps", ["account_id", "created_at"])
    op.drop_index("ix_operations_account_status", table_name="operations")
    op.drop_index("ix_operations_account_created", table_name="operations")
    op.create_index("ix_operations_account_created", "operations", ["account_id", "created_at"])
    op.drop_index("ix_servers_account_rented", table_name="servers")
    for name in SERVER_INDEXES:
        op.drop_index(name, table_name="servers")
    op.create_index("ix_servers_account_live", "servers", ["account_id", "deleted_at", "id"])
