"""Subjects and consent: identity providers and consents.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_providers",
        sa.Column("issuer", sa.String(300), primary_key=True),
        sa.Column("jwks", sa.JSON(), nullable=False),
        sa.Column("algorithms", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "consents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("subject_id", sa.String(18), nullable=False),
        sa.Column("grantee", sa.String(80), nullable=False),
        sa.Column("national_item", sa.String(8), nullable=False),
        sa.Column("item_code", sa.String(33), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("valid_from", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_list", sa.Integer(), sa.ForeignKey("status_lists.id"), nullable=False),
        sa.Column("status_idx", sa.Integer(), nullable=False),
        sa.Column("artefact", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("status_list", "status_idx"),
    )
    op.create_index("ix_consents_subject", "consents", ["subject_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_consents_subject", "consents")
    op.drop_table("consents")
    op.drop_table("identity_providers")
