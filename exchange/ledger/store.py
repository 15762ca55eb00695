"""Reading the stored ledger: subtree hashes, roots, proofs, checkpoints and entries.

Proofs touch O(log n) stored hashes. The proof algorithms ask for subtrees in an order that
does not depend on the hashes' values, so each computation runs twice: once against a
recorder that learns which (level, index) pairs are needed, then against one batched query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import ColumnElement, Connection, and_, or_, select, tuple_

from exchange.errors import InvalidInput, LedgerIntegrityError, NotFound
from exchange.ledger import merkle
from exchange.ledger.receipt import make_receipt
from exchange.persistence.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerNode

T = TypeVar("T")
_ZERO = b"\0" * 32
ENTRIES_PAGE_MAX = 1000


class _Recorder(merkle.HashSource):
    __slots__ = ("wanted",)

    def __init__(self) -> None:
        self.wanted: set[tuple[int, int]] = set()

    def subtree(self, level: int, index: int) -> bytes:
        self.wanted.add((level, index))
        return _ZERO


class _Fetched(merkle.HashSource):
    __slots__ = ("hashes",)

    def __init__(self, hashes: dict[tuple[int, int], bytes]) -> None:
        self.hashes = hashes

    def subtree(self, level: int, index: int) -> bytes:
        try:
            return self.hashes[(level, index)]
        except KeyError:
            raise LedgerIntegrityError(
                f"stored tree lacks subtree ({level}, {index})", code="tree-incomplete"
            ) from None


def fetch_subtrees(
    conn: Connection, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of the given complete perfect subtrees (level 0 = leaf hashes)."""
    wanted = list(wanted)
    leaves = [i for lvl, i in wanted if lvl == 0]
    inner = [(lvl, i) for lvl, i in wanted if lvl > 0]
    out: dict[tuple[int, int], bytes] = {}
    if leaves:
        for idx, h in conn.execute(
            select(LedgerEntry.idx, LedgerEntry.leaf_hash).where(LedgerEntry.idx.in_(leaves))
        ):
            out[(0, idx)] = h
    if inner:
        cond: ColumnElement[bool]
        if conn.dialect.name == "postgresql":
            cond = tuple_(LedgerNode.level, LedgerNode.idx).in_(inner)
        else:
            cond = or_(*(and_(LedgerNode.level == lvl, LedgerNode.idx == i) for lvl, i in inner))
        for lvl, idx, h in conn.execute(
            select(LedgerNode.level, LedgerNode.idx, LedgerNode.hash).where(cond)
        ):
            out[(lvl, idx)] = h
    return out


def with_stored_hashes(conn: Connection, compute: Callable[[merkle.HashSource], T]) -> T:
    """Run ``compute`` against the stored tree with one batched read."""
    recorder = _Recorder()
    compute(recorder)
    return compute(_Fetched(fetch_subtrees(conn, recorder.wanted)))


def tree_size(conn: Connection) -> int:
    return int(conn.execute(select(LedgerHead.size).where(LedgerHead.id == 1)).scalar_one())


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    row = conn.execute(
        select(LedgerCheckpoint.size, LedgerCheckpoint.root, LedgerCheckpoint.note)
        .order_by(LedgerCheckpoint.size.desc())
        .limit(1)
    ).first()
    return StoredCheckpoint(row[0], row[1], row[2]) if row else None


def checkpoint_covering(conn: Connection, index: int) -> StoredCheckpoint:
    """The latest checkpoint, which must cover ``index``."""
    cp = latest_checkpoint(conn)
    if cp is None or cp.size <= index:
        raise NotFound(f"no signed checkpoint covers index {index} yet", code="not-yet-covered")
    return cp


def _check_sizes(
    *, index: int | None = None, first: int | None = None, size: int, limit: int
) -> None:
    if size < 1 or size > limit:
        raise InvalidInput(
            f"size must be between 1 and the tree size {limit}", code="bad-tree-size"
        )
    if index is not None and not 0 <= index < size:
        raise InvalidInput(f"index must be in [0, {size})", code="index-out-of-range")
    if first is not None and not 1 <= first <= size:
        raise InvalidInput(f"first must be in [1, {size}]", code="bad-tree-size")


def inclusion(conn: Connection, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 audit path for ``index`` in the tree of ``size``."""
    _check_sizes(index=index, size=size, limit=tree_size(conn))
    return with_stored_hashes(conn, lambda src: merkle.inclusion_proof(index, size, src))


def consistency(conn: Connection, first: int, second: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between two tree sizes."""
    _check_sizes(first=first, size=second, limit=tree_size(conn))
    return with_stored_hashes(conn, lambda src: merkle.consistency_proof(first, second, src))


def receipt(conn: Connection, index: int, cp: StoredCheckpoint | None = None) -> str:
    """A C2SP tlog-proof@v1 receipt for ``index`` under ``cp`` (default: the latest
    signed checkpoint, which must cover it)."""
    if cp is None or cp.size <= index:
        cp = checkpoint_covering(conn, index)
    path = with_stored_hashes(conn, lambda src: merkle.inclusion_proof(index, cp.size, src))
    return make_receipt(index, path, cp.note)


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


def iter_entries(conn: Connection, batch: int = 5000) -> Iterable[StoredEntry]:
    """Every entry in index order, streamed in batches (for export)."""
    start = 0
    while True:
        rows = conn.execute(
            select(LedgerEntry.idx, LedgerEntry.leaf)
            .where(LedgerEntry.idx >= start)
            .order_by(LedgerEntry.idx)
            .limit(batch)
        ).all()
        if not rows:
            return
        for i, leaf in rows:
            yield StoredEntry(i, bytes(leaf))
        start = rows[-1][0] + 1
