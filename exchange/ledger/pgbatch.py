"""A ledger batch's statements on PostgreSQL: five round trips where there were fourteen.

A batch under the lock was a statement at a time through SQLAlchemy: the lock, the head, the
outbox, the last checkpoint, the subtrees, the subjects; a COPY each for the entries and the
subtree hashes (two round trips each); the head, the outbox, the checkpoint; the commit.
Here :func:`read` sends the lock and every read at once in one pipeline — with the subtree
hashes for the head the writer expects (the head it committed last, unless another process
appended since) and the latest index of every subject the batch will hold; :func:`write`
sends one simple query: both COPYs, the head, the outbox deletion and the checkpoint (a
round trip to each COPY's go-ahead, one for the rest). Both go
through libpq (:mod:`.pqwire`) on the connection SQLAlchemy holds, so in its transaction,
without psycopg's per-statement Python; the commit stays SQLAlchemy's. What a round trip
costs grows with the distance to the database (and, in this process, with the wait for the
GIL after each answer); the checks on what was read stay in :mod:`.append`, unchanged.
:class:`Locked` and :class:`Columns` are what a batch reads and writes on either database.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import psycopg

from exchange.errors import LedgerIntegrityError
from exchange.ledger import pqwire, store
from exchange.ledger.backpointers import latest_by_subject_sql
from exchange.ledger.leaf import subject_prefix
from exchange.ledger.store import Coord, StoredCheckpoint

# The batch's reads are prepared (by the wire, at their first use) and their plans never
# depend on the values: without this the hashes' read, whose arrays a custom plan can count,
# was planned afresh at every batch (its bind 0.14 ms a batch against 0.035 with it).
# No JIT either: every statement here is a few index probes, and the generic plans' cost
# estimates can pass jit_above_cost, when compiling took 7-100 ms a batch.
_GENERIC: Final = (
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true),"
    " set_config('jit', 'off', true)"
)
_HEAD: Final = "SELECT size, last_hash FROM ledger_head WHERE id = 1"
_OUTBOX: Final = "SELECT seq, ref, event FROM ledger_outbox ORDER BY seq LIMIT $1"
_CHECKPOINT: Final = "SELECT size, root, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
# The latest index of the subjects asked for and of those of the outbox rows read with them
# (the same rows: this runs after _OUTBOX in the same transaction, under the lock), each one
# backward probe of ix_ledger_entries_subject_prefix (backpointers.latest_by_subject_sql).
_SUBJECTS: Final = latest_by_subject_sql(
    "SELECT unnest($1::text[]) UNION SELECT o.event->>'subject' FROM"
    " (SELECT event FROM ledger_outbox ORDER BY seq LIMIT $2) AS o"
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


# The reads under the lock, as the wire runs them (prepared once per connection).
_W_START: Final = pqwire.Statement(
    "ledger_start", _GENERIC.replace("SELECT ", "SELECT pg_advisory_xact_lock($1), ", 1)
)
_W_HEAD: Final = pqwire.Statement("ledger_head", _HEAD)
_W_OUTBOX: Final = pqwire.Statement("ledger_outbox", _OUTBOX)
_W_CHECKPOINT: Final = pqwire.Statement("ledger_checkpoint", _CHECKPOINT)
_W_HASHES: Final = pqwire.Statement(
    "ledger_hashes",
    store.PG_HASHES_SQL.replace("%(leaves)s", "$1")
    .replace("%(levels)s", "$2")
    .replace("%(idxs)s", "$3"),
)
_W_SUBJECTS: Final = pqwire.Statement("ledger_subjects", _SUBJECTS)


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
    sent at once (:mod:`.pqwire`), executed in that order under the lock. The hashes are
    kept only if the head is at the expected size."""
    expected, coords = probe if probe is not None else (None, ())
    leaves, inner = store.plan_reads(coords)
    n = pqwire.text_param(limit)
    calls: list[tuple[pqwire.Statement, Sequence[bytes | None]]] = [
        (_W_START, [pqwire.text_param(lock_key)]),
        (_W_HEAD, ()),
        (_W_OUTBOX, [n]),
        (_W_CHECKPOINT, ()),
        (_W_SUBJECTS, [pqwire.array_param(subjects), n]),
    ]
    if probe is not None:
        calls.append((_W_HASHES, [
            pqwire.array_param(leaves),
            pqwire.array_param([lvl for lvl, _ in inner]),
            pqwire.array_param([i for _, i in inner]),
        ]))
    results = pqwire.Wire(raw).pipeline(calls)
    head, outbox, checkpoint, found = results[1:5]
    if head.ntuples != 1:
        raise LedgerIntegrityError("the ledger head row is missing")
    size = _int(head.get_value(0, 0))
    last_hash = _bytes(head.get_value(0, 1))
    subtrees = None
    if probe is not None and size == expected:
        hashes = results[5]
        subtrees = store.assemble(coords, {
            (_int(hashes.get_value(r, 0)), _int(hashes.get_value(r, 1))):
                _bytes(hashes.get_value(r, 2))
            for r in range(hashes.ntuples)
        })
    cp = None
    if checkpoint.ntuples:
        cp = StoredCheckpoint(
            _int(checkpoint.get_value(0, 0)),
            _bytes(checkpoint.get_value(0, 1)),
            _bytes(checkpoint.get_value(0, 2)).decode(),
        )
    return Locked(
        size=size,
        last_hash=last_hash,
        outbox=[
            (
                _int(outbox.get_value(r, 0)),
                _bytes(outbox.get_value(r, 1)).decode(),
                orjson.loads(_bytes(outbox.get_value(r, 2))),
            )
            for r in range(outbox.ntuples)
        ],
        checkpoint=cp,
        subtrees=subtrees,
        subjects={
            _bytes(found.get_value(r, 0)).decode(): pqwire.int8(found.get_value(r, 1))
            for r in range(found.ntuples)
        },
    )


def _bytes(value: bytes | None) -> bytes:
    if value is None:
        raise LedgerIntegrityError("a ledger column read NULL where it never is")
    return bytes(value)


def _int(value: bytes | None) -> int:
    return pqwire.integer(_bytes(value))


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
    """Copy in the batch's entries and subtree hashes, move the head, drop the appended
    outbox rows and store ``checkpoint`` (size, root, note, time_ms): one simple query
    (:meth:`.pqwire.Wire.script`) whose two COPYs take the binary data the C builder made
    (or :func:`copy_binary`'s, the same bytes), the rest as literals — integers, hex, and
    the note escaped by libpq. The commit stays the caller's."""
    wire = pqwire.Wire(raw)
    entries_data, nodes_data = entries.copy or (
        copy_binary(entries.rows(time_ms), _ENTRY_TYPES),
        copy_binary(nodes, _NODE_TYPES),
    )
    sql: list[str] = []
    copies: list[bytes] = []
    if entries:
        sql.append(_COPY_ENTRIES)
        copies.append(entries_data)
    if nodes:
        sql.append(_COPY_NODES)
        copies.append(nodes_data)
    # The values below are integers (int()), hex digits, and the note as libpq quotes it.
    size, last_hash = head
    sql.append(
        f"UPDATE ledger_head SET size = {int(size)}, last_hash = {_hex(last_hash)}"  # noqa: S608
        " WHERE id = 1"
    )
    if drop:
        seqs = ",".join(str(int(q)) for q in drop)
        sql.append(f"DELETE FROM ledger_outbox WHERE seq = ANY('{{{seqs}}}'::int8[])")  # noqa: S608
    if checkpoint is not None:
        cp_size, root, note, cp_time = checkpoint
        sql.append(
            "INSERT INTO ledger_checkpoints (size, root, note, time_ms) VALUES"  # noqa: S608
            f" ({int(cp_size)}, {_hex(root)}, {wire.literal(note).decode()}, {int(cp_time)})"
        )
    wire.script(";\n".join(sql).encode(), copies)


def _hex(value: bytes) -> str:
    """A bytea literal that reads the same under any ``standard_conforming_strings``."""
    return f"decode('{value.hex()}', 'hex')"


_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_NULL: Final = struct.pack("!i", -1)


def copy_binary(rows: Iterable[Sequence[Any]], types: Sequence[str]) -> bytes:
    """PostgreSQL's binary COPY data for ``rows``: each field an ``int8``, ``int2``,
    ``bytea`` or ``text`` (or None: NULL). The same bytes as the C builder's."""
    out = [_COPY_HEADER]
    count = struct.pack("!h", len(types))
    for row in rows:
        out.append(count)
        for value, kind in zip(row, types, strict=True):
            if value is None:
                out.append(_NULL)
                continue
            if kind == "int8":
                data = struct.pack("!q", value)
            elif kind == "int2":
                data = struct.pack("!h", value)
            elif kind == "text":
                data = value.encode()
            else:
                data = bytes(value)
            out.append(struct.pack("!i", len(data)))
            out.append(data)
    out.append(struct.pack("!h", -1))
    return b"".join(out)
