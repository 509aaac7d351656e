"""servers' extra IP addresses

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-12 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ip_addresses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("server_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("address", sa.String(length=15), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["server_id"], ["servers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        # Two allocations racing for one address: the second insert fails and takes the next.
        sa.UniqueConstraint("address", name="uq_ip_addresses_address"),
    )
    op.create_index("ix_ip_addresses_account_id", "ip_addresses", ["account_id"])
    op.create_index("ix_ip_addresses_server_id", "ip_addresses", ["server_id"])


def downgrade() -> None:
    op.drop_index("ix_ip_addresses_server_id", table_name="ip_addresses")
    op.drop_index("ix_ip_addresses_account_id", table_name="ip_addresses")
    op.drop_table("ip_addresses")
