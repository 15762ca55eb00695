"""Ledger: inner subtree hashes stored only at every fourth level.

``ledger_nodes`` held every complete perfect subtree's hash: one row for every entry, a
second COPY in every batch and a second set of index inserts. From now on the writer stores
only the subtrees at levels that are multiples of ``exchange.ledger.store.STRATUM`` (4, 8,
12, …), one row for every 15 entries; a subtree at another level is folded from the at most
8 stored ones below it when read. This deletes the rows of the other levels.

Going down recomputes them, level by level, from the leaf hashes and the levels below.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from exchange.ledger import merkle

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STRATUM = 4  # exchange.ledger.store.STRATUM when this migration was written


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM ledger_nodes WHERE level % :m <> 0").bindparams(m=STRATUM))


def downgrade() -> None:
    """Every level's subtrees again, computed from the leaf hashes (all held in memory at
    once: 32 bytes an entry), the levels that were kept written again as they were."""
    bind = op.get_bind()
    size = bind.execute(sa.text("SELECT size FROM ledger_head WHERE id = 1")).scalar() or 0
    below = [
        bytes(h)
        for (h,) in bind.execute(
            sa.text("SELECT leaf_hash FROM ledger_entries WHERE idx < :n ORDER BY idx"),
            {"n": size},
        )
    ]
    nodes = sa.table(
        "ledger_nodes",
        sa.column("level", sa.SmallInteger()),
        sa.column("idx", sa.BigInteger()),
        sa.column("hash", sa.LargeBinary()),
    )
    level = 1
    while len(below) > 1:
        hashes = [merkle.node_hash(below[k], below[k + 1]) for k in range(0, len(below) - 1, 2)]
        if level % STRATUM:
            op.bulk_insert(nodes, [{"level": level, "idx": i, "hash": h}
                                   for i, h in enumerate(hashes)])
        below = hashes
        level += 1
