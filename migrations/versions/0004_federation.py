"""Federation: answered node-to-node requests (idempotency by request id), peer receipts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_requests",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "peer_receipts",
        sa.Column("ledger_index", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("province", sa.String(2), nullable=False),
        sa.Column("receipt", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("peer_receipts")
    op.drop_table("federation_requests")
