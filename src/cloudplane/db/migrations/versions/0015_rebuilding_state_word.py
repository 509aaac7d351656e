"""The state indexes rebuilt on the state word that now shows "rebuilding" (a visible task since rebuild exists).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-14 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

OLD_TASKS = "('deleting', 'rebooting', 'restoring', 'starting', 'stopping')"
VISIBLE_TASKS = "('deleting', 'rebooting', 'rebuilding', 'restoring', 'starting', 'stopping')"
LIVE = sa.text("deleted_at IS NULL")


def _word(tasks: str) -> sa.TextClause:
    """db/tables.py's SERVER_STATE_WORD over these visible tasks."""
    return sa.text(
        f"(CASE WHEN task_state IN {tasks} THEN task_state WHEN suspended_at IS NOT NULL THEN 'suspended' "
        "ELSE status END)"
    )


def _rebuild_indexes(word: sa.TextClause) -> None:
    columns = ["status", "task_state", "suspended_at"]
    indexes: dict[str, list[str | sa.TextClause]] = {
        "ix_servers_account_state": ["account_id", word, "created_at", "id", *columns, "deleted_at"],
        "ix_servers_account_state_label": [
            "account_id", word, sa.text("lower(label)"), "id", "label", *columns, "deleted_at",
        ],
        "ix_servers_live_state": [word, "id", *columns, "deleted_at"],
    }  # fmt: skip
    for name, indexed in indexes.items():
        op.drop_index(name, table_name="servers")
        op.create_index(name, "servers", indexed, sqlite_where=LIVE, postgresql_where=LIVE)


def upgrade() -> None:
    _rebuild_indexes(_word(VISIBLE_TASKS))


def downgrade() -> None:
    _rebuild_indexes(_word(OLD_TASKS))
