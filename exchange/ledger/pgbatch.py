"""A ledger batch's statements on PostgreSQL: seven round trips where there were fourteen.

A batch under the lock was a statement at a time through SQLAlchemy: the lock, the head, the
outbox, the last checkpoint, the subtrees, the subjects; a COPY each for the entries and the
subtree hashes (two round trips each); the head, the outbox, the checkpoint; the commit.
Here :func:`read` sends the lock and every read at once through psycopg's pipeline mode, on
the connection SQLAlchemy holds (so in its transaction) — with the subtree hashes for the
head the writer expects (the head it committed last, unless another process appended since)
and the latest index of every subject the batch will hold; :func:`write` copies the rows in
and then sends the head, the outbox deletion and the checkpoint at once. The commit stays
SQLAlchemy's. What a round trip costs grows with the distance to the database (and, in this
process, with the wait for the GIL after each answer); the checks on what was read stay in
:mod:`.append`, unchanged. :class:`Locked` and :class:`Columns` are what a batch reads and
writes on either database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from exchange.errors import LedgerIntegrityError
from exchange.ledger import store
from exchange.ledger.backpointers import latest_by_subject_sql
from exchange.ledger.leaf import subject_prefix
from exchange.ledger.store import Coord, StoredCheckpoint

# The batch's statements are prepared (psycopg, from their fifth run) and their plans never
# depend on the values: without this the hashes' read, whose arrays a custom plan can count,
# was planned afresh at every batch (its bind 0.14 ms a batch against 0.035 with it).
# No JIT either: every statement here is a few index probes, and the generic plans' cost
# estimates can pass jit_above_cost, when compiling took 7-100 ms a batch.
_GENERIC: Final = (
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true),"
    " set_config('jit', 'off', true)"
)
_LOCK: Final = "SELECT pg_advisory_xact_lock(%s)"
_HEAD: Final = "SELECT size, last_hash FROM ledger_head WHERE id = 1"
_OUTBOX: Final = "SELECT seq, ref, event FROM ledger_outbox ORDER BY seq LIMIT %s"
_CHECKPOINT: Final = "SELECT size, root, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
# The latest index of the subjects asked for and of those of the outbox rows read with them
# (the same rows: this runs after _OUTBOX in the same transaction, under the lock), each one
# backward probe of ix_ledger_entries_subject_prefix (backpointers.latest_by_subject_sql).
_SUBJECTS: Final = latest_by_subject_sql(
    "SELECT unnest(%s::text[]) UNION SELECT o.event->>'subject' FROM"
    " (SELECT event FROM ledger_outbox ORDER BY seq LIMIT %s) AS o"
)
# Binary COPY for the rows: ~3 µs of Python per row, and a third of the server time of an
# INSERT from unnest() of array parameters (measured: 2.8 against 9.1 ms for 128 entries).
_COPY_ENTRIES: Final = (
    "COPY ledger_entries (idx, leaf, leaf_hash, ref, kind, actor, subject, time_ms,"
    " subject_prefix) FROM STDIN (FORMAT BINARY)"
)
_ENTRY_TYPES: Final = ["int8", "bytea", "bytea", "text", "text", "text", "text", "int8", "int8"]
_COPY_NODES: Final = "COPY ledger_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)"
_NODE_TYPES: Final = ["int2", "int8", "bytea"]
_MOVE_HEAD: Final = "UPDATE ledger_head SET size = %s, last_hash = %s WHERE id = 1"
_DROP_OUTBOX: Final = "DELETE FROM ledger_outbox WHERE seq = ANY(%s::int8[])"
_SIGNED: Final = (
    "INSERT INTO ledger_checkpoints (size, root, note, time_ms) VALUES (%s, %s, %s, %s)"
)


@dataclass(slots=True)
class Locked:
    """What a batch reads under the lock."""

    size: int
    last_hash: bytes
    outbox: list[tuple[int, str, Any]]  # (seq, ref, event JSON)
    checkpoint: StoredCheckpoint | None
    subtrees: dict[Coord, bytes] | None  # the probe of this head; None: not read yet
    subjects: dict[str, int | None]  # latest index of each subject read with it (None: none)


@dataclass(slots=True)
class Columns:
    """A batch's ledger_entries rows, column by column (time_ms is the batch's own)."""

    idx: list[int]
    leaf: list[bytes]
    leaf_hash: list[bytes]
    ref: list[str | None]  # None: a direct event's (its ref is not stored)
    kind: list[str]
    actor: list[str]
    subject: list[str | None]
    # The COPY data of these rows and of the batch's new subtree rows, when the C builder
    # made them (header, rows, trailer: PostgreSQL's binary COPY format).
    copy: tuple[bytes, bytes] | None = None

    @classmethod
    def empty(cls) -> Columns:
        return cls([], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.idx)

    def rows(self, time_ms: int) -> Iterator[tuple[Any, ...]]:
        """The rows in ledger_entries' column order: ``time_ms``, then each subject's
        prefix (leaf.subject_prefix)."""
        for row in zip(
            self.idx, self.leaf, self.leaf_hash, self.ref, self.kind, self.actor, self.subject,
            strict=True,
        ):
            subject = row[6]
            yield (*row, time_ms, None if subject is None else subject_prefix(subject))


def read(
    raw: psycopg.Connection[Any],
    *,
    lock_key: int,
    limit: int,
    probe: tuple[int, Sequence[Coord]] | None,
    subjects: Sequence[str],
) -> Locked:
    """For this transaction, keep the prepared statements' generic plans; take the advisory
    lock, then read the head, up to ``limit`` outbox rows, the latest
    checkpoint, the stored hashes ``probe`` = (expected size, coordinates) names, and the
    latest index of each of ``subjects`` and of the subjects of those outbox rows — all
    sent at once, executed in that order under the lock. The hashes are kept only if the
    head is at the expected size."""
    expected, coords = probe if probe is not None else (None, ())
    leaves, inner = store.plan_reads(coords)
    with raw.pipeline():
        raw.execute(_GENERIC)
        raw.execute(_LOCK, (lock_key,))
        head = raw.execute(_HEAD, binary=True)
        outbox = raw.execute(_OUTBOX, (limit,), binary=True)
        checkpoint = raw.execute(_CHECKPOINT, binary=True)
        hashes = (
            raw.execute(
                store.PG_HASHES_SQL,
                {
                    "leaves": leaves,
                    "levels": [lvl for lvl, _ in inner],
                    "idxs": [i for _, i in inner],
                },
                binary=True,
            )
            if probe is not None
            else None
        )
        found = raw.execute(_SUBJECTS, (list(subjects), limit), binary=True)
    h = head.fetchone()
    if h is None:
        raise LedgerIntegrityError("the ledger head row is missing")
    cp = checkpoint.fetchone()
    size = int(h[0])
    return Locked(
        size=size,
        last_hash=bytes(h[1]),
        outbox=[(int(seq), str(ref), event) for seq, ref, event in outbox.fetchall()],
        checkpoint=StoredCheckpoint(int(cp[0]), bytes(cp[1]), str(cp[2])) if cp else None,
        subtrees=(
            None
            if hashes is None or size != expected
            else store.assemble(
                coords, {(int(lvl), int(i)): bytes(x) for lvl, i, x in hashes.fetchall()}
            )
        ),
        subjects={s: None if i is None else int(i) for s, i in found.fetchall()},
    )


def write(
    raw: psycopg.Connection[Any],
    *,
    entries: Columns,
    time_ms: int,
    nodes: Sequence[tuple[int, int, bytes]],
    head: tuple[int, bytes],
    drop: Sequence[int],
    checkpoint: tuple[int, bytes, str, int] | None,
) -> None:
    """Copy in the batch's entries and subtree hashes, then move the head, drop the appended
    outbox rows and store ``checkpoint`` (size, root, note, time_ms), those three at once."""
    entries_ready, nodes_ready = entries.copy or (None, None)
    with raw.cursor() as cur:
        if entries:
            _copy_in(cur, _COPY_ENTRIES, _ENTRY_TYPES, entries_ready, entries.rows(time_ms))
        if nodes:
            _copy_in(cur, _COPY_NODES, _NODE_TYPES, nodes_ready, nodes)
    with raw.pipeline():
        raw.execute(_MOVE_HEAD, head)
        if drop:
            raw.execute(_DROP_OUTBOX, (list(drop),))
        if checkpoint is not None:
            raw.execute(_SIGNED, checkpoint)


def _copy_in(
    cur: psycopg.Cursor[Any],
    sql: str,
    types: list[str],
    ready: bytes | None,
    rows: Iterable[Sequence[Any]],
) -> None:
    """One binary COPY: the ``ready`` data when the C builder made it, else ``rows``."""
    with cur.copy(sql) as copy:
        if ready is not None:
            copy.write(ready)
            return
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
