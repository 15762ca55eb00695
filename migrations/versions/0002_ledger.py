"""The access ledger: entries, Merkle subtree hashes, head, checkpoints, outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("ref", sa.String(36), nullable=False, unique=True),
        sa.Column("kind", sa.String(48), nullable=False),
        sa.Column("actor", sa.String(80), nullable=False),
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_entries_subject", "ledger_entries", ["subject", "idx"])
    op.create_table(
        "ledger_nodes",
        sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.LargeBinary(32), nullable=False),
    )
    op.execute(
        sa.text("INSERT INTO ledger_head (id, size, last_hash) VALUES (1, 0, :h)").bindparams(
            sa.bindparam("h", b"\0" * 32, type_=sa.LargeBinary())
        )
    )
    op.create_table(
        "ledger_checkpoints",
        sa.Column("size", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "ledger_outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("ref", sa.String(36), nullable=False, unique=True),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_outbox_created_ms", "ledger_outbox", ["created_ms"])


def downgrade() -> None:
    op.drop_index("ix_ledger_outbox_created_ms", "ledger_outbox")
    op.drop_table("ledger_outbox")
    op.drop_table("ledger_checkpoints")
    op.drop_table("ledger_head")
    op.drop_table("ledger_nodes")
    op.drop_index("ix_ledger_entries_subject", "ledger_entries")
    op.drop_table("ledger_entries")
