"""operations as resources (target, times, who asked), the events outbox, executors with heartbeats

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("target_type", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("target_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("error_code", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("actor_user_id", ID, nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("client_ip", sa.String(length=45), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    # Operations made before targets existed act on their snapshot, else their server.
    op.execute(
        "UPDATE operations SET target_type = 'snapshot', target_id = CAST(snapshot_id AS VARCHAR(64)) "
        "WHERE snapshot_id IS NOT NULL"
    )
    op.execute(
        "UPDATE operations SET target_type = 'server', target_id = CAST(server_id AS VARCHAR(64)) "
        "WHERE target_type IS NULL AND server_id IS NOT NULL"
    )
    op.execute(
        "UPDATE operations SET target_type = 'account', target_id = CAST(account_id AS VARCHAR(64)) "
        "WHERE target_type IS NULL"
    )
    with op.batch_alter_table("operations") as batch:
        batch.alter_column("target_type", existing_type=sa.String(length=40), nullable=False)
        batch.alter_column("target_id", existing_type=sa.String(length=64), nullable=False)
        batch.create_index("ix_operations_account_created", ["account_id", "created_at"])
        batch.create_index("ix_operations_target", ["target_type", "target_id"])

    op.create_table(
        "events",
        sa.Column("seq", ID, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("account_id", ID, nullable=True),
        sa.Column("actor_user_id", ID, nullable=True),
        sa.Column("target_type", sa.String(length=40), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("operation_id", sa.String(length=36), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("client_ip", sa.String(length=45), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_events_account_seq", "events", ["account_id", "seq"])
    op.create_index("ix_events_target", "events", ["target_type", "target_id"])
    op.create_index("ix_events_created", "events", ["created_at"])

    op.create_table(
        "executors",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_over_by", sa.String(length=128), nullable=True),
        sa.Column("taken_over_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("executors")
    op.drop_index("ix_events_created", table_name="events")
    op.drop_index("ix_events_target", table_name="events")
    op.drop_index("ix_events_account_seq", table_name="events")
    op.drop_table("events")
    with op.batch_alter_table("operations") as batch:
        batch.drop_index("ix_operations_target")
        batch.drop_index("ix_operations_account_created")
        for column in (
            "started_at",
            "client_ip",
            "request_id",
            "actor_user_id",
            "error_code",
            "target_id",
            "target_type",
        ):
            batch.drop_column(column)
