"""gpu instances

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 01:41:50.279988
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_model", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("gpu_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cpu_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("ram_gb", sa.Numeric(precision=10, scale=2), nullable=True))
        batch_op.add_column(sa.Column("storage_gb", sa.Numeric(precision=10, scale=2), nullable=True))
        batch_op.add_column(sa.Column("price_per_hour", sa.Numeric(precision=10, scale=4), nullable=True))
        batch_op.add_column(sa.Column("region", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("offer_id", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("provider_data", sa.Text(), nullable=True))
        batch_op.alter_column(
            "plan_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        )
        batch_op.alter_column(
            "image_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        )
        batch_op.alter_column(
            "location_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.alter_column(
            "location_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        )
        batch_op.alter_column(
            "image_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        )
        batch_op.alter_column(
            "plan_id", existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        )
        batch_op.drop_column("provider_data")
        batch_op.drop_column("offer_id")
        batch_op.drop_column("region")
        batch_op.drop_column("price_per_hour")
        batch_op.drop_column("storage_gb")
        batch_op.drop_column("ram_gb")
        batch_op.drop_column("cpu_count")
        batch_op.drop_column("gpu_count")
        batch_op.drop_column("gpu_model")
