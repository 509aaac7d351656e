"""An index on servers (provider, provider_ref): the reconciler asks which of a page of a provider's machines some
server owns, a page at a time, and without it each page would scan every server

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-10 01:00:00.000000
"""

from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_servers_provider_ref", "servers", ["provider", "provider_ref"])


def downgrade() -> None:
    op.drop_index("ix_servers_provider_ref", table_name="servers")
