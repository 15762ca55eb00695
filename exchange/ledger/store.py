"""Reading the stored ledger: subtree hashes, roots, proofs, checkpoints and entries.

Proofs touch O(log n) stored hashes. Which (level, index) pairs a proof needs depends only on
its index and size, never on the hashes, so every read is planned first and answered by ONE
statement (leaf hashes and inner nodes together, driver-level SQL: no statement compilation).

The read path (:func:`inclusion`, :func:`receipt`, :func:`recent_checkpoint`,
:func:`checkpoint_covering`) keeps a small in-process cache per database (per connection
pool):

* the tree's hashes: a stored complete perfect subtree hash never changes once written, so
  every node at level ≥ ``k`` (``k`` chosen so that a level holds at most
  ``CACHE_LEVEL_NODES`` nodes: every level, leaf hashes included, up to 1,048,576 entries;
  64 MiB for the whole cache at any size) is kept, once read, in one anonymous memory
  mapping per level (resident only where written). Only hashes read from storage by the
  read path go in; the writer's reads
  (:func:`fetch_subtrees`, :func:`with_stored_hashes`) neither use nor fill it, so its
  integrity checks always see storage. A proof whose every hash is cached is answered by
  :func:`cached_inclusion` without touching the database (the HTTP route then needs no
  worker thread); any other goes to :func:`inclusion_many`.
* the latest signed checkpoint, for at most ``CHECKPOINT_MAX_AGE`` seconds, and dropped at
  once when any transaction of this process commits (e.g. the ledger writer signing).
  A cached checkpoint is a real signed one; proofs are computed for the size it names.
* the roots of the signed checkpoints it has seen (size → root).

Every proof the read path serves is verified before it is returned: against the signed root
when its size is a checkpoint this process has seen, otherwise against the root of that size
computed from the same hashes. A proof that fails (a stored hash changed under the cache, or
storage tampered with) is retried once from storage alone with the cache dropped; if that
fails too, :class:`LedgerIntegrityError` is raised — the node never serves a proof that does
not verify against the checkpoint it names.
"""

from __future__ import annotations

import mmap
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, bindparam, event, select
from sqlalchemy.pool import Pool

from exchange.errors import (
    ExchangeError,
    InvalidInput,
    LedgerIntegrityError,
    NotFound,
    VerificationFailed,
)
from exchange.ledger import merkle
from exchange.ledger.receipt import make_receipt
from exchange.persistence.models import LedgerCheckpoint, LedgerEntry

T = TypeVar("T")
_ZERO: Final = b"\0" * 32
ENTRIES_PAGE_MAX = 1000
CACHE_LEVEL_NODES: Final = 1 << 20
"""The most nodes one cached level holds (32 MiB); the cache holds < 2 × that many in all."""
CHECKPOINT_MAX_AGE: Final = 0.05
"""Seconds a cached latest checkpoint may be served (it is a real signed one, just older)."""
_KNOWN_ROOTS_MAX: Final = 1024

Coord = tuple[int, int]


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
            raise _missing(level, index) from None


def _missing(level: int, index: int) -> LedgerIntegrityError:
    return LedgerIntegrityError(
        f"stored tree lacks subtree ({level}, {index})", code="tree-incomplete"
    )


# -- one statement for any set of stored hashes --------------------------------------------

_PG_SQL: Final = (
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
        return conn.exec_driver_sql(_PG_SQL, params)
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


def _fetch(conn: Connection, wanted: Iterable[Coord]) -> dict[Coord, bytes]:
    leaves: list[int] = []
    inner: list[Coord] = []
    for c in wanted:
        if c[0] == 0:
            leaves.append(c[1])
        else:
            inner.append(c)
    return {(lvl, i): bytes(h) for lvl, i, h in _select_hashes(conn, leaves, inner)}


def fetch_subtrees(
    conn: Connection, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """The stored hashes of the given complete perfect subtrees (level 0 = leaf hashes).

    Always from storage (never the read path's cache): the writer checks storage with it."""
    return _fetch(conn, wanted)


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


# -- the read path's in-process cache -------------------------------------------------------


class _ReadCache:
    """What one process remembers of one database (see the module docstring)."""

    __slots__ = (
        "__weakref__",
        "_levels",
        "_lock",
        "_min_level",
        "checkpoint",
        "checkpoint_at",
        "roots",
        "unsigned",
    )

    def __init__(self) -> None:
        # One anonymous mapping per level, CACHE_LEVEL_NODES hashes long: the kernel maps
        # its pages, zero-filled, only as hashes are written, so a level costs resident
        # memory only where it was touched (a bytearray grown to the highest index asked
        # is resident in full, and briefly twice over while it grows).
        self._levels: list[mmap.mmap | None] = []
        self._min_level = 0
        self._lock = threading.Lock()
        self.checkpoint: StoredCheckpoint | None = None
        self.checkpoint_at = 0.0
        self.roots: dict[int, bytes] = {}
        self.unsigned: dict[int, None] = {}  # sizes known not to be checkpoint sizes

    # checkpoints
    def remember(self, cp: StoredCheckpoint) -> None:
        roots = self.roots
        if cp.size not in roots:
            with self._lock:  # worker threads remember at once: evict one entry each
                if len(roots) >= _KNOWN_ROOTS_MAX:
                    del roots[next(iter(roots))]
                roots[cp.size] = cp.root

    def not_signed(self, sizes: Iterable[int]) -> None:
        unsigned = self.unsigned
        with self._lock:
            for size in sizes:
                if len(unsigned) >= _KNOWN_ROOTS_MAX:
                    del unsigned[next(iter(unsigned))]
                unsigned[size] = None

    def forget_checkpoint(self) -> None:
        self.checkpoint = None

    # subtree hashes
    def split(self, wanted: Iterable[Coord], size: int) -> tuple[dict[Coord, bytes], list[Coord]]:
        """(cached hashes, coordinates still to read) for a tree of ``size``."""
        k = max(0, size.bit_length() - CACHE_LEVEL_NODES.bit_length() + 1)
        if k != self._min_level:
            self._set_min_level(k)
        levels = self._levels
        have: dict[Coord, bytes] = {}
        missing: list[Coord] = []
        top = len(levels)
        for c in wanted:
            lvl, i = c
            if k <= lvl < top and (row := levels[lvl]) is not None:
                h = row[i * 32 : i * 32 + 32]
                if len(h) == 32 and h != _ZERO:
                    have[c] = h
                    continue
            missing.append(c)
        return have, missing

    def keep(self, hashes: dict[Coord, bytes]) -> None:
        """Remember the upper-level hashes among ``hashes`` (read from storage)."""
        k = self._min_level
        with self._lock:
            levels = self._levels
            for (lvl, i), h in hashes.items():
                if lvl < k or i >= CACHE_LEVEL_NODES or len(h) != 32:
                    continue
                while len(levels) <= lvl:
                    levels.append(None)
                row = levels[lvl]
                if row is None:
                    row = levels[lvl] = mmap.mmap(-1, CACHE_LEVEL_NODES * 32)
                row[i * 32 : i * 32 + 32] = h

    def _set_min_level(self, k: int) -> None:
        with self._lock:
            self._min_level = k
            for lvl in range(min(k, len(self._levels))):
                self._levels[lvl] = None  # levels now too wide: let them go

    def drop_hashes(self) -> None:
        with self._lock:
            self._levels = []

    def nbytes(self) -> int:
        """Bytes mapped for cached levels (resident only where hashes were written)."""
        return sum(len(row) for row in self._levels if row is not None)


_caches: weakref.WeakKeyDictionary[Pool, _ReadCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache(conn: Connection) -> _ReadCache:
    engine = conn.engine
    try:
        return _caches[engine.pool]
    except KeyError:
        pass
    with _caches_lock:
        cache = _caches.get(engine.pool)
        if cache is None:
            cache = _caches[engine.pool] = _ReadCache()
            base: Engine = getattr(engine, "_proxied", engine)  # an OptionEngine's engine
            ref = weakref.ref(cache)

            def _on_commit(_conn: Any) -> None:
                c = ref()
                if c is not None:
                    c.forget_checkpoint()

            event.listen(base, "commit", _on_commit)
        return cache


def drop_read_cache(conn: Connection) -> None:
    """Forget everything the read path cached for this database (tests, operators)."""
    with _caches_lock:
        _caches.pop(conn.engine.pool, None)
    cache = _cache(conn)
    cache.drop_hashes()


def recent_checkpoint(
    conn: Connection, max_age: float = CHECKPOINT_MAX_AGE
) -> StoredCheckpoint | None:
    """The latest signed checkpoint as of at most ``max_age`` seconds ago (or a commit of
    this process, whichever was later): a real signed checkpoint, maybe not the newest."""
    cache = _cache(conn)
    cp, now = cache.checkpoint, time.monotonic()
    if cp is not None and now - cache.checkpoint_at <= max_age:
        return cp
    cp = latest_checkpoint(conn)
    if cp is not None:
        cache.remember(cp)
        cache.checkpoint, cache.checkpoint_at = cp, now
    return cp


def checkpoint_covering(conn: Connection, index: int) -> StoredCheckpoint:
    """The latest checkpoint, which must cover ``index`` (served from the read path's cache
    when that one, at most ``CHECKPOINT_MAX_AGE`` old, covers it; otherwise read now)."""
    cp = recent_checkpoint(conn)
    if cp is None or cp.size <= index:
        cp = recent_checkpoint(conn, max_age=-1.0)
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


# -- inclusion proofs: planned, read once, verified -----------------------------------------


def _decomposition(start: int, n: int) -> list[Coord]:
    """merkle._decomposition's coordinates: the perfect subtrees of [start, start + n)."""
    out: list[Coord] = []
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def inclusion_plan(index: int, size: int) -> list[list[Coord]]:
    """The subtrees each element of PATH(index, D[0:size]) folds, leaf side first.

    Mirrors :func:`merkle.inclusion_proof`: an element is one perfect subtree, or (where
    the path first turns left) the right-to-left fold of a ragged range's decomposition."""
    if not 0 <= index < size:
        raise InvalidInput(f"index {index} not in tree size {size}", code="index-out-of-range")
    plan: list[list[Coord]] = []
    start, n = 0, size
    while n > 1:
        k = 1 << ((n - 1).bit_length() - 1)
        if index < start + k:
            plan.append(_decomposition(start + k, n - k))
            n = k
        else:
            plan.append([(k.bit_length() - 1, start // k)])
            start, n = start + k, n - k
    plan.reverse()
    return plan


def _fold(coords: list[Coord], hashes: dict[Coord, bytes]) -> bytes:
    try:
        acc = hashes[coords[-1]]
        for c in reversed(coords[:-1]):
            acc = merkle.node_hash(hashes[c], acc)
    except KeyError as e:
        raise _missing(*e.args[0]) from None
    return acc


def _proved(
    plan: list[list[Coord]],
    index: int,
    size: int,
    root: bytes | None,
    hashes: dict[Coord, bytes],
) -> list[bytes]:
    """The proof from ``hashes``, verified against ``root`` (default: the root of ``size``
    from the same hashes), or :class:`VerificationFailed`."""
    proof = [_fold(coords, hashes) for coords in plan]
    if root is None:
        root = _fold(_decomposition(0, size), hashes)
    leaf = hashes.get((0, index))
    if leaf is None:
        raise _missing(0, index)
    merkle.verify_inclusion(leaf, index, size, proof, root)
    return proof


def _planned(index: int, size: int, root: bytes | None, wanted: set[Coord]) -> list[list[Coord]]:
    """:func:`inclusion_plan`, adding to ``wanted`` every hash :func:`_proved` will need: the
    path's subtrees, the leaf, and (``root`` unknown) the decomposition the root folds."""
    plan = inclusion_plan(index, size)
    for coords in plan:
        wanted.update(coords)
    wanted.add((0, index))
    if root is None:
        wanted.update(_decomposition(0, size))
    return plan


def _verified_inclusions(
    conn: Connection, asks: Sequence[tuple[int, int, bytes | None]]
) -> list[list[bytes] | LedgerIntegrityError]:
    """Verified audit paths for ``(index, size, root or None)``, all read in one statement."""
    cache = _cache(conn)
    roots = cache.roots
    plans: list[tuple[list[list[Coord]], int, int, bytes | None]] = []
    wanted: set[Coord] = set()
    size_max = 0
    for index, size, signed in asks:
        root = roots.get(size) if signed is None else signed
        plan = _planned(index, size, root, wanted)
        plans.append((plan, index, size, root))
        size_max = max(size_max, size)
    hashes, missing = cache.split(wanted, size_max)
    if missing:
        read = _fetch(conn, missing)
        cache.keep(read)
        hashes.update(read)
    out: list[list[bytes] | LedgerIntegrityError] = []
    cold: dict[Coord, bytes] | None = None
    for plan, index, size, root in plans:
        try:
            out.append(_proved(plan, index, size, root, hashes))
            continue
        except (VerificationFailed, LedgerIntegrityError):
            pass
        # Something cached or stored changed: drop the cache, read everything from storage.
        if cold is None:
            cache.drop_hashes()
            cold = _fetch(conn, wanted)
        try:
            out.append(_proved(plan, index, size, root, cold))
        except (VerificationFailed, LedgerIntegrityError) as e:
            err = LedgerIntegrityError(
                f"the stored tree does not prove entry {index} in the tree of size {size}",
                code="tree-inconsistent",
            )
            err.__cause__ = e
            out.append(err)
    return out


def cached_inclusion(
    engine: Engine, index: int, size: int | None
) -> tuple[int, list[bytes]] | None:
    """:func:`inclusion_many`'s answer to one ask from this process's cache alone, or None
    when anything it needs is not cached: a signed checkpoint that bounds ``size`` (for
    ``size`` None, the latest, at most ``CHECKPOINT_MAX_AGE`` old, covering ``index``), or
    one of the hashes. Never reads the database and never raises: an ask that is out of
    range, or a proof that does not verify, is left to :func:`inclusion_many`, which
    answers it from storage. The proof is verified as there: against the signed root of
    ``size`` when this process has seen that checkpoint, else against the root of ``size``
    computed from the same hashes."""
    cache = _caches.get(engine.pool)
    cp = None if cache is None else cache.checkpoint
    if cache is None or cp is None:
        return None
    if size is None:
        if time.monotonic() - cache.checkpoint_at > CHECKPOINT_MAX_AGE:
            return None
        size = cp.size
    if not 0 <= index < size <= cp.size:  # a tree never shrinks: cp bounds every size
        return None
    root = cache.roots.get(size)
    wanted: set[Coord] = set()
    plan = _planned(index, size, root, wanted)
    hashes, missing = cache.split(wanted, size)
    if missing:
        return None
    try:
        return size, _proved(plan, index, size, root, hashes)
    except (VerificationFailed, LedgerIntegrityError):
        return None


def _verified_inclusion(
    conn: Connection, index: int, size: int, root: bytes | None = None
) -> list[bytes]:
    (result,) = _verified_inclusions(conn, [(index, size, root)])
    if isinstance(result, LedgerIntegrityError):
        raise result
    return result


def inclusion(conn: Connection, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 audit path for ``index`` in the tree of ``size``.

    A size within a recent signed checkpoint needs no tree-size read (trees only grow)."""
    cp = recent_checkpoint(conn)
    limit = cp.size if cp is not None and size <= cp.size else tree_size(conn)
    _check_sizes(index=index, size=size, limit=limit)
    return _verified_inclusion(conn, index, size)


def inclusion_many(
    conn: Connection, asks: Sequence[tuple[int, int | None]]
) -> list[tuple[int, list[bytes]] | ExchangeError]:
    """:func:`inclusion` for many ``(index, size)`` at once (``size`` None: that of a recent
    checkpoint covering ``index``): ``(size, path)`` or the error, per ask, in order. All
    the hashes they need come from the cache or ONE statement."""
    out: list[tuple[int, list[bytes]] | ExchangeError] = []
    ok: list[tuple[int, int, bytes | None]] = []
    where: list[int] = []
    limit: int | None = None
    for index, asked in asks:
        try:
            size = checkpoint_covering(conn, index).size if asked is None else asked
            cp = recent_checkpoint(conn)
            if cp is not None and size <= cp.size:
                _check_sizes(index=index, size=size, limit=cp.size)
            else:
                if limit is None:
                    limit = tree_size(conn)
                _check_sizes(index=index, size=size, limit=limit)
        except ExchangeError as e:
            out.append(e)
            continue
        where.append(len(out))
        out.append((size, []))
        ok.append((index, size, None))
    if ok:
        _learn_roots(conn, {size for _, size, _ in ok})
        for pos, (_, size, _), proof in zip(where, ok, _verified_inclusions(conn, ok), strict=True):
            out[pos] = proof if isinstance(proof, ExchangeError) else (size, proof)
    return out


_ROOTS_OF = select(LedgerCheckpoint.size, LedgerCheckpoint.root).where(
    LedgerCheckpoint.size.in_(bindparam("sizes", expanding=True))
)


def _learn_roots(conn: Connection, sizes: set[int]) -> None:
    """Remember the signed roots of those ``sizes`` that are checkpoint sizes, so that their
    proofs verify against a signed root (and later from the cache alone) rather than a root
    computed from the same hashes. A size found unsigned is remembered as such: every
    committed head is signed in its own transaction, so a size up to the tree's that is not
    signed now never will be."""
    cache = _cache(conn)
    unknown = sorted(s for s in sizes if s not in cache.roots and s not in cache.unsigned)
    if not unknown:
        return
    found = conn.execute(_ROOTS_OF, {"sizes": unknown}).all()
    for size, root in found:
        cache.remember(StoredCheckpoint(int(size), bytes(root), ""))
    cache.not_signed(set(unknown) - {int(size) for size, _ in found})


def consistency(conn: Connection, first: int, second: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between two tree sizes."""
    _check_sizes(first=first, size=second, limit=tree_size(conn))
    return with_stored_hashes(conn, lambda src: merkle.consistency_proof(first, second, src))


def receipt(conn: Connection, index: int, cp: StoredCheckpoint | None = None) -> str:
    """A C2SP tlog-proof@v1 receipt for ``index`` under ``cp`` (default: the latest
    signed checkpoint, which must cover it)."""
    if cp is None or cp.size <= index:
        cp = checkpoint_covering(conn, index)
    _cache(conn).remember(cp)
    path = _verified_inclusion(conn, index, cp.size, cp.root)
    return make_receipt(index, path, cp.note)


def receipts(conn: Connection, indices: Sequence[int]) -> list[str | ExchangeError]:
    """:func:`receipt` for many indices, each under the latest checkpoint covering it; all
    the hashes come from the cache or ONE statement. The receipt or the error, per index."""
    out: list[str | ExchangeError] = []
    asks: list[tuple[int, int, bytes | None]] = []
    notes: list[tuple[int, str]] = []  # (position in out, checkpoint note)
    cache = _cache(conn)
    for index in indices:
        try:
            cp = checkpoint_covering(conn, index)
        except ExchangeError as e:
            out.append(e)
            continue
        cache.remember(cp)
        notes.append((len(out), cp.note))
        out.append("")
        asks.append((index, cp.size, cp.root))
    for (pos, note), (index, _, _), path in zip(
        notes, asks, _verified_inclusions(conn, asks), strict=True
    ):
        out[pos] = path if isinstance(path, ExchangeError) else make_receipt(index, path, note)
    return out


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
