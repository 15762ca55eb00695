"""Reading the stored ledger: subtree hashes, the head, checkpoints and entries.

Which stored hashes a computation over the tree needs depends only on sizes and indices,
never on the hashes, so every read is planned first and answered by ONE statement (leaf
hashes and inner nodes together, driver-level SQL: no statement compilation).

Strata: the leaf hashes are stored with the entries, but inner nodes only at levels that are
multiples of :data:`STRATUM` (4, 8, 12, …) — one ``ledger_nodes`` row for every 15 entries
instead of one for every entry. A subtree at any other level is folded from the at most
2**(STRATUM-1) stored ones below it (:func:`stored_coords`): a read asks for those
(:func:`plan_reads`) and returns the subtrees asked for (:func:`assemble`), so the callers
see every level as before. Everything
here reads storage as it is now; the read path's cache (:mod:`.readcache`) and the proofs
served from it (:mod:`.proofs`) build on these reads. The writer's reads
(:func:`fetch_subtrees`, :func:`with_stored_hashes`) always come from here, so its
integrity checks always see storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import psycopg
from sqlalchemy import Connection, select

from exchange.errors import InvalidInput, LedgerIntegrityError
from exchange.ledger import merkle
from exchange.ledger.leaf import subject_prefix
from exchange.persistence.models import LedgerEntry

T = TypeVar("T")
ZERO: Final = b"\0" * 32
ENTRIES_PAGE_MAX = 1000
STRATUM: Final = 4
"""Inner subtree hashes are stored only at levels that are multiples of this (migration
0008): every fourth level keeps the rows a batch writes to a fifteenth, and a subtree at
another level costs at most 8 stored hashes and 7 node hashes to read."""

Coord = tuple[int, int]


def is_stored(level: int) -> bool:
    """Whether subtrees at ``level`` are stored (the leaves, level 0, always are)."""
    return level % STRATUM == 0


def stored_coords(coord: Coord) -> list[Coord]:
    """The stored subtrees that make up ``coord``: itself at a stored level, else the
    2**(level % STRATUM) subtrees under it at the stored level below, left to right."""
    level, index = coord
    span = level % STRATUM
    if not span:
        return [coord]
    base = level - span
    return [(base, j) for j in range(index << span, (index + 1) << span)]


def plan_reads(wanted: Iterable[Coord]) -> tuple[list[int], list[Coord]]:
    """What to read for ``wanted``: the leaf indices and the stored inner subtrees, each
    once, sorted."""
    leaves: set[int] = set()
    inner: set[Coord] = set()
    for coord in wanted:
        for c in stored_coords(coord):
            if c[0] == 0:
                leaves.add(c[1])
            else:
                inner.add(c)
    return sorted(leaves), sorted(inner)


def assemble(wanted: Iterable[Coord], read: dict[Coord, bytes]) -> dict[Coord, bytes]:
    """Each of ``wanted`` from the stored hashes ``read`` (folded pairwise where its level is
    not stored); one that lacks a stored hash is left out."""
    out: dict[Coord, bytes] = {}
    for coord in wanted:
        parts = stored_coords(coord)
        if len(parts) == 1:
            h = read.get(coord)
            if h is not None:
                out[coord] = h
            continue
        try:
            row = [read[c] for c in parts]
        except KeyError:
            continue
        while len(row) > 1:
            row = [merkle.node_hash(row[k], row[k + 1]) for k in range(0, len(row), 2)]
        out[coord] = row[0]
    return out


class _Recorder(merkle.HashSource):
    __slots__ = ("wanted",)

    def __init__(self) -> None:
        self.wanted: set[tuple[int, int]] = set()

    def subtree(self, level: int, index: int) -> bytes:
        self.wanted.add((level, index))
        return ZERO


class _Fetched(merkle.HashSource):
    __slots__ = ("hashes",)

    def __init__(self, hashes: dict[tuple[int, int], bytes]) -> None:
        self.hashes = hashes

    def subtree(self, level: int, index: int) -> bytes:
        try:
            return self.hashes[(level, index)]
        except KeyError:
            raise missing_subtree(level, index) from None


def missing_subtree(level: int, index: int) -> LedgerIntegrityError:
    return LedgerIntegrityError(
        f"stored tree lacks subtree ({level}, {index})", code="tree-incomplete"
    )


@contextmanager
def driver(conn: Connection) -> Iterator[psycopg.Connection[Any]]:
    """The psycopg connection under ``conn`` (PostgreSQL), in its transaction. SQLAlchemy
    never sees what fails on it: if the server went away, ``conn`` is invalidated so that
    the socket is not pooled again."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        yield raw
    except Exception:
        if raw.closed or raw.broken:
            conn.invalidate()
        raise


def indices_of_refs(conn: Connection, refs: Iterable[str]) -> dict[str, int]:
    """The ledger indices of those of ``refs`` (outbox events' refs) already appended. Only
    outbox entries store a ref; a direct entry's is NULL and never matches."""
    rows = conn.execute(
        select(LedgerEntry.ref, LedgerEntry.idx).where(LedgerEntry.ref.in_(list(refs)))
    )
    return {ref: idx for ref, idx in rows if ref is not None}  # (IN never matches NULL)


def decomposition(start: int, n: int) -> list[Coord]:
    """merkle._decomposition's coordinates: the perfect subtrees of [start, start + n),
    largest first (for start 0, the frontier of a tree of size n)."""
    out: list[Coord] = []
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


# -- one statement for any set of stored hashes --------------------------------------------

PG_HASHES_SQL: Final = (
    "SELECT 0::int2, idx, leaf_hash FROM ledger_entries WHERE idx = ANY(%(leaves)s::int8[])"
    " UNION ALL SELECT n.level, n.idx, n.hash"
    " FROM unnest(%(levels)s::int2[], %(idxs)s::int8[]) AS w(level, idx)"
    " JOIN ledger_nodes n ON n.level = w.level AND n.idx = w.idx"
)


def _select_hashes(
    conn: Connection, leaves: Sequence[int], inner: Sequence[Coord]
) -> Iterable[tuple[int, int, bytes]]:
    """(level, index, hash) rows for the wanted leaves and inner nodes, in one statement.

    PostgreSQL: a nested loop of primary-key probes over ``unnest`` of two arrays (a tuple
    ``IN`` is planned as a BitmapOr with a planning cost per element, and a row-value
    ``= ANY`` as a sequential scan); the text never changes, so psycopg prepares it.
    SQLite: the same join over a ``VALUES`` list (a row-value ``IN`` scans the table)."""
    if conn.dialect.name == "postgresql":
        params: Any = {
            "leaves": list(leaves),
            "levels": [lvl for lvl, _ in inner],
            "idxs": [i for _, i in inner],
        }
        # Through the psycopg connection itself, in binary: no SQLAlchemy result per read
        # (about a third of an in-process proof's time went to the layers around it).
        with driver(conn) as raw, raw.cursor(binary=True) as cur:
            return cur.execute(PG_HASHES_SQL, params).fetchall()
    parts: list[str] = []
    args: list[int] = []
    if leaves:
        marks = ",".join("?" * len(leaves))  # placeholders only: values are bound
        parts.append(f"SELECT 0, idx, leaf_hash FROM ledger_entries WHERE idx IN ({marks})")  # noqa: S608
        args.extend(leaves)
    if inner:
        pairs = ",".join(["(?,?)"] * len(inner))  # placeholders only: values are bound
        parts.append(
            f"SELECT n.level, n.idx, n.hash FROM (VALUES {pairs}) AS w"  # noqa: S608
            " JOIN ledger_nodes n ON n.level = w.column1 AND n.idx = w.column2"
        )
        for lvl, i in inner:
            args.append(lvl)
            args.append(i)
    if not parts:
        return ()
    return conn.exec_driver_sql(" UNION ALL ".join(parts), tuple(args))


def fetch_subtrees(conn: Connection, wanted: Iterable[Coord]) -> dict[Coord, bytes]:
    """The hashes of the given complete perfect subtrees (level 0 = leaf hashes) from the
    stored ones, in one statement; those whose stored hashes are not all there are left
    out."""
    wanted = list(wanted)
    leaves, inner = plan_reads(wanted)
    read = {(int(lvl), int(i)): bytes(h) for lvl, i, h in _select_hashes(conn, leaves, inner)}
    return assemble(wanted, read)


def with_stored_hashes(conn: Connection, compute: Callable[[merkle.HashSource], T]) -> T:
    """Run ``compute`` against the stored tree with one batched read (from storage)."""
    recorder = _Recorder()
    compute(recorder)
    return compute(_Fetched(fetch_subtrees(conn, recorder.wanted)))


def tree_size(conn: Connection) -> int:
    row = conn.exec_driver_sql("SELECT size FROM ledger_head WHERE id = 1").first()
    if row is None:
        raise LedgerIntegrityError("the ledger head row is missing")
    return int(row[0])


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    """The latest signed checkpoint, read from storage now (never cached)."""
    row = conn.exec_driver_sql(
        "SELECT size, root, note FROM ledger_checkpoints ORDER BY size DESC LIMIT 1"
    ).first()
    return StoredCheckpoint(int(row[0]), bytes(row[1]), str(row[2])) if row else None


@dataclass(frozen=True, slots=True)
class StoredEntry:
    index: int
    leaf: bytes


def entries(conn: Connection, start: int, end: int) -> list[StoredEntry]:
    """Entries [start, end), at most ENTRIES_PAGE_MAX at a time."""
    if start < 0 or end <= start:
        raise InvalidInput("need 0 <= start < end", code="bad-range")
    end = min(end, start + ENTRIES_PAGE_MAX)
    rows = conn.execute(
        select(LedgerEntry.idx, LedgerEntry.leaf)
        .where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
        .order_by(LedgerEntry.idx)
    )
    return [StoredEntry(i, bytes(leaf)) for i, leaf in rows]


def subject_entries(
    conn: Connection, subject: str, *, before: int | None = None, limit: int = 1
) -> list[StoredEntry]:
    """The subject's latest ``limit`` entries below ``before`` (all: None), newest first.

    A backward scan of ix_ledger_entries_subject_prefix (leaf.subject_prefix), keeping the
    subject's own: another pseudonym may share the prefix. (Asked as one condition with the
    subject, the planner cannot know that the prefix follows from it, expects almost no
    match and may read every entry of the subject first.)"""
    prefix = subject_prefix(subject)
    page = max(limit, 64)
    out: list[StoredEntry] = []
    while len(out) < limit:
        q = select(LedgerEntry.idx, LedgerEntry.leaf, LedgerEntry.subject).where(
            LedgerEntry.subject_prefix == prefix
        )
        if before is not None:
            q = q.where(LedgerEntry.idx < before)
        rows = conn.execute(q.order_by(LedgerEntry.idx.desc()).limit(page)).all()
        out += [StoredEntry(int(i), bytes(leaf)) for i, leaf, s in rows if s == subject]
        if len(rows) < page:
            break
        before = int(rows[-1][0])
    return out[:limit]


def iter_entries(conn: Connection, batch: int = 5000) -> Iterable[StoredEntry]:
    """Every entry in index order, streamed in batches."""
    for rows in entry_batches(conn, None, batch):
        for i, leaf in rows:
            yield StoredEntry(i, leaf)


_BATCH_SQL = (
    "SELECT idx, leaf FROM ledger_entries WHERE idx >= %s AND idx < %s ORDER BY idx LIMIT %s"
)


def entry_batches(
    conn: Connection, below: int | None, batch: int = 5000
) -> Iterator[list[tuple[int, bytes]]]:
    """The stored entries with index below ``below`` (all: None), in index order, as lists
    of (index, leaf bytes) of at most ``batch`` rows (for export: the ledger is never held
    in memory). On PostgreSQL the rows come through the connection's psycopg cursor in
    binary format: the leaves as bytes, not hex text, and no SQLAlchemy row per entry
    (together about half of an export's time)."""
    end = (1 << 63) - 1 if below is None else below
    if conn.dialect.name != "postgresql":

        def rows_from(start: int) -> list[tuple[int, bytes]]:
            rows = conn.execute(
                select(LedgerEntry.idx, LedgerEntry.leaf)
                .where(LedgerEntry.idx >= start, LedgerEntry.idx < end)
                .order_by(LedgerEntry.idx)
                .limit(batch)
            )
            return [(int(i), bytes(leaf)) for i, leaf in rows]

        yield from _keyset(rows_from, end)
        return
    with driver(conn) as raw, raw.cursor(binary=True) as cur:
        yield from _keyset(
            lambda start: cur.execute(_BATCH_SQL, (start, end, batch)).fetchall(), end
        )


def _keyset(
    rows_from: Callable[[int], list[tuple[int, bytes]]], end: int
) -> Iterator[list[tuple[int, bytes]]]:
    """Batches ``rows_from(start)`` in index order, each from the index after the last."""
    start = 0
    while start < end:
        rows = rows_from(start)
        if not rows:
            return
        yield rows
        start = rows[-1][0] + 1
