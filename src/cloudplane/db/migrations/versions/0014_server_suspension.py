"""Servers an administrator suspended: `suspended_at` beside the status (which keeps the power state the server goes
back to), the state indexes rebuilt on the state word that now says "suspended", and two indexes over every
tenant's live servers for the admins' list.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-12 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

VISIBLE_TASKS = "('deleting', 'rebooting', 'restoring', 'starting', 'stopping')"
# db/tables.py's SERVER_STATE_WORD, as 0011 had it and as it is from here on.
OLD_STATE_WORD = sa.text(f"(CASE WHEN task_state IN {VISIBLE_TASKS} THEN task_state ELSE status END)")
STATE_WORD = sa.text(
    f"(CASE WHEN task_state IN {VISIBLE_TASKS} THEN task_state WHEN suspended_at IS NOT NULL THEN 'suspended' "
    "ELSE status END)"
)
LIVE = sa.text("deleted_at IS NULL")


def _state_indexes(word: sa.TextClause, *extra: str) -> dict[str, list[str | sa.TextClause]]:
    return {
        "ix_servers_account_state": ["account_id", word, "created_at", "id", "status", "task_state", *extra],
        "ix_servers_account_state_label": [
            "account_id", word, sa.text("lower(label)"), "id", "label", "status", "task_state", *extra,
        ],
    }  # fmt: skip


def upgrade() -> None:
    op.add_column("servers", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
    for name, columns in _state_indexes(STATE_WORD, "suspended_at").items():
        op.drop_index(name, table_name="servers")
        op.create_index(name, "servers", [*columns, "deleted_at"], sqlite_where=LIVE, postgresql_where=LIVE)
    op.create_index("ix_servers_live", "servers", ["id", "deleted_at"], sqlite_where=LIVE, postgresql_where=LIVE)
    op.create_index(
        "ix_servers_live_state", "servers", [STATE_WORD, "id", "status", "task_state", "suspended_at", "deleted_at"],
        sqlite_where=LIVE, postgresql_where=LIVE,
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_servers_live_state", table_name="servers")
    op.drop_index("ix_servers_live", table_name="servers")
    for name, columns in _state_indexes(OLD_STATE_WORD).items():
        op.drop_index(name, table_name="servers")
        op.create_index(name, "servers", [*columns, "deleted_at"], sqlite_where=LIVE, postgresql_where=LIVE)
    op.drop_column("servers", "suspended_at")
