"""metrics history: each server's samples (a minute apart, kept a day) and hourly roll-ups (kept a month)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 21:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_samples",
        sa.Column("server_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("memory_used_mb", sa.Integer(), nullable=False),
        sa.Column("disk_used_mb", sa.Integer(), nullable=True),
        sa.Column("net_in_bytes", sa.BigInteger(), nullable=False),
        sa.Column("net_out_bytes", sa.BigInteger(), nullable=False),
        sa.Column("net_rx_total", sa.BigInteger(), nullable=False),
        sa.Column("net_tx_total", sa.BigInteger(), nullable=False),
        sa.Column("uptime_s", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["server_id"], ["servers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("server_id", "resolution_s", "at"),
    )
    op.create_index("ix_server_samples_age", "server_samples", ["resolution_s", "at"])


def downgrade() -> None:
    op.drop_index("ix_server_samples_age", table_name="server_samples")
    op.drop_table("server_samples")
