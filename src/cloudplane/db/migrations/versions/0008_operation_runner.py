"""operations run by Cloudplane's own engine: which executor holds each, how often it was started, where it got to

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("executor_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("stage", sa.String(length=40), nullable=True))
        batch.create_index("ix_operations_executor", ["executor_id", "status"])
    # Operations a DBOS workflow was running when this version was installed have no executor: the first process
    # to start claims them and runs them again from their last recorded state (every step is idempotent).


def downgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.drop_index("ix_operations_executor")
        batch.drop_column("stage")
        batch.drop_column("attempts")
        batch.drop_column("executor_id")
