"""idempotency replies sealed under the client's key: store a hash of the key, not the key, and no plaintext reply

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 00:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The rows kept so far hold replies (API keys, root passwords) in plaintext: they go, rather than be carried
    # over. A retry within 24 h of an upgrade then runs again instead of replaying.
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_constraint("uq_idempotency_account_key", type_="unique")
        batch.drop_column("key")
        batch.drop_column("response_headers")
        batch.drop_column("response_body")
        batch.add_column(sa.Column("key_hash", sa.String(length=64), nullable=False))
        batch.add_column(sa.Column("response_sealed", sa.LargeBinary(), nullable=True))
        batch.create_unique_constraint("uq_idempotency_account_key_hash", ["account_id", "key_hash"])


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_constraint("uq_idempotency_account_key_hash", type_="unique")
        batch.drop_column("key_hash")
        batch.drop_column("response_sealed")
        batch.add_column(sa.Column("key", sa.String(length=255), nullable=False))
        batch.add_column(sa.Column("response_headers", sa.Text(), nullable=True))
        batch.add_column(sa.Column("response_body", sa.LargeBinary(), nullable=True))
        batch.create_unique_constraint("uq_idempotency_account_key", ["account_id", "key"])
