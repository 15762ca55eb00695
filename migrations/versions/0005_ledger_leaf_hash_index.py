"""Ledger: the leaf hashes in the primary key's index (PostgreSQL), for proofs.

An inclusion proof reads one or two leaf hashes at random indices. From the heap that is
one random page of ``ledger_entries`` a proof — each ~650-byte row shares its page with a
dozen others — so once the table outgrows the page cache (≈ 1.2 GB at a million entries),
most proofs wait for the disk. With ``INCLUDE (leaf_hash)`` the primary key's index holds
the hashes (≈ 65 bytes an entry), and a proof's read is an index-only scan wherever
(auto)vacuum has marked the pages all-visible. SQLite keeps its table as it is.

On an existing ledger this rebuilds the index under an exclusive lock on the table, so the
writer waits meanwhile: 1.5 s for 1.95M entries on the bench machine.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey,"
            " ADD CONSTRAINT ledger_entries_pkey PRIMARY KEY (idx) INCLUDE (leaf_hash)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey,"
            " ADD CONSTRAINT ledger_entries_pkey PRIMARY KEY (idx)"
        )
