"""Node foundation: agencies, clients, keys, status lists, certificates.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agencies",
        sa.Column("uscc", sa.String(18), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("types", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "clients",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("jwks", sa.JSON(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("agency_uscc", sa.String(18), sa.ForeignKey("agencies.uscc"), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "used_assertions",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_used_assertions_expires_at", "used_assertions", ["expires_at"])
    op.create_table(
        "keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("retired_at", TS, nullable=True),
    )
    op.create_index("ix_keys_owner", "keys", ["owner"])
    op.create_table(
        "status_lists",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("bits", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "status_entries",
        sa.Column("list_id", sa.Integer(), sa.ForeignKey("status_lists.id"), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("status", sa.SmallInteger(), nullable=False),
    )
    op.create_table(
        "certificates",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("issuer_uscc", sa.String(18), sa.ForeignKey("agencies.uscc"), nullable=False),
        sa.Column("subject_id", sa.String(18), nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("claims", sa.JSON(), nullable=False),
        sa.Column("credential", sa.Text(), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("valid_from", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.String(500), nullable=True),
        sa.Column("status_list", sa.Integer(), sa.ForeignKey("status_lists.id"), nullable=False),
        sa.Column("status_idx", sa.Integer(), nullable=False),
        sa.Column("issued_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("status_list", "status_idx"),
    )
    op.create_index("ix_certificates_subject", "certificates", ["subject_id", "type"])


def downgrade() -> None:
    op.drop_index("ix_certificates_subject", "certificates")
    op.drop_table("certificates")
    op.drop_table("status_entries")
    op.drop_table("status_lists")
    op.drop_index("ix_keys_owner", "keys")
    op.drop_table("keys")
    op.drop_index("ix_used_assertions_expires_at", "used_assertions")
    op.drop_table("used_assertions")
    op.drop_table("clients")
    op.drop_table("agencies")
