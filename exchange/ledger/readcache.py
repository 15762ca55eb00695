"""The read path's in-process cache, one per database (per connection pool).

* the tree's hashes: a stored complete perfect subtree hash never changes once written, so
  every node at level ≥ ``k`` (``k`` chosen so that a level holds at most
  ``CACHE_LEVEL_NODES`` nodes: every level, leaf hashes included, up to 1,048,576 entries;
  64 MiB for the whole cache at any size) is kept, once read, in one anonymous memory
  mapping per level (resident only where written). Only hashes read from storage by the
  read path (:mod:`.proofs`) go in; the writer's reads (:func:`.store.fetch_subtrees`,
  :func:`.store.with_stored_hashes`) neither use nor fill it, so its integrity checks always
  see storage.
* the latest signed checkpoint, for at most ``CHECKPOINT_MAX_AGE`` seconds, and dropped at
  once when any transaction of this process commits (e.g. the ledger writer signing).
  A cached checkpoint is a real signed one; proofs are computed for the size it names.
* the roots of the signed checkpoints it has seen (size → root), and sizes known not to be
  checkpoint sizes.
"""

from __future__ import annotations

import mmap
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import Connection, Engine, bindparam, event, select
from sqlalchemy.pool import Pool

from exchange.errors import NotFound
from exchange.ledger.store import ZERO, Coord, StoredCheckpoint, latest_checkpoint
from exchange.persistence.models import LedgerCheckpoint

CACHE_LEVEL_NODES: Final = 1 << 20
"""The most nodes one cached level holds (32 MiB); the cache holds < 2 × that many in all."""
CHECKPOINT_MAX_AGE: Final = 0.05
"""Seconds a cached latest checkpoint may be served (it is a real signed one, just older)."""
_KNOWN_ROOTS_MAX: Final = 1024


class ReadCache:
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

    def fresh(self) -> bool:
        """Whether the cached latest checkpoint is at most ``CHECKPOINT_MAX_AGE`` old."""
        return time.monotonic() - self.checkpoint_at <= CHECKPOINT_MAX_AGE

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
                if len(h) == 32 and h != ZERO:
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


_caches: weakref.WeakKeyDictionary[Pool, ReadCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def read_cache(conn: Connection) -> ReadCache:
    """This process's cache for the database ``conn`` is connected to."""
    engine = conn.engine
    try:
        return _caches[engine.pool]
    except KeyError:
        pass
    with _caches_lock:
        cache = _caches.get(engine.pool)
        if cache is None:
            cache = _caches[engine.pool] = ReadCache()
            base: Engine = getattr(engine, "_proxied", engine)  # an OptionEngine's engine
            ref = weakref.ref(cache)

            def _on_commit(_conn: Any) -> None:
                c = ref()
                if c is not None:
                    c.forget_checkpoint()

            event.listen(base, "commit", _on_commit)
        return cache


def cached(engine: Engine) -> ReadCache | None:
    """The cache for ``engine``'s database if this process made one (never makes one)."""
    return _caches.get(engine.pool)


def drop_read_cache(conn: Connection) -> None:
    """Forget everything the read path cached for this database (tests, operators)."""
    with _caches_lock:
        _caches.pop(conn.engine.pool, None)
    cache = read_cache(conn)
    cache.drop_hashes()


def recent_checkpoint(
    conn: Connection, max_age: float = CHECKPOINT_MAX_AGE
) -> StoredCheckpoint | None:
    """The latest signed checkpoint as of at most ``max_age`` seconds ago (or a commit of
    this process, whichever was later): a real signed checkpoint, maybe not the newest."""
    cache = read_cache(conn)
    cp, now = cache.checkpoint, time.monotonic()
    if cp is not None and now - cache.checkpoint_at <= max_age:
        return cp
    cp = latest_checkpoint(conn)
    if cp is not None:
        cache.remember(cp)
        cache.checkpoint, cache.checkpoint_at = cp, now
    return cp


def checkpoint_bounding(conn: Connection, size: int) -> StoredCheckpoint | None:
    """A signed checkpoint of at least ``size``, to bound a proof's size: the cached one
    whatever its age when it is that large (a tree only grows, so a size a signed
    checkpoint once had stays within the tree), else :func:`recent_checkpoint`. None when
    there is no checkpoint at all; maybe smaller than ``size`` (then the tree may be too)."""
    cp = read_cache(conn).checkpoint
    if cp is not None and size <= cp.size:
        return cp
    return recent_checkpoint(conn)


def checkpoint_covering(conn: Connection, index: int) -> StoredCheckpoint:
    """The latest checkpoint, which must cover ``index`` (served from the read path's cache
    when that one, at most ``CHECKPOINT_MAX_AGE`` old, covers it; otherwise read now)."""
    cp = recent_checkpoint(conn)
    if cp is None or cp.size <= index:
        cp = recent_checkpoint(conn, max_age=-1.0)
    if cp is None or cp.size <= index:
        raise NotFound(f"no signed checkpoint covers index {index} yet", code="not-yet-covered")
    return cp


_ROOTS_OF = select(LedgerCheckpoint.size, LedgerCheckpoint.root).where(
    LedgerCheckpoint.size.in_(bindparam("sizes", expanding=True))
)


def learn_roots(conn: Connection, sizes: set[int]) -> None:
    """Remember the signed roots of those ``sizes`` that are checkpoint sizes, so that their
    proofs verify against a signed root (and later from the cache alone) rather than a root
    computed from the same hashes. A size found unsigned is remembered as such: every
    committed head is signed in its own transaction, so a size up to the tree's that is not
    signed now never will be."""
    cache = read_cache(conn)
    unknown = sorted(s for s in sizes if s not in cache.roots and s not in cache.unsigned)
    if not unknown:
        return
    found = conn.execute(_ROOTS_OF, {"sizes": unknown}).all()
    for size, root in found:
        cache.remember(StoredCheckpoint(int(size), bytes(root), ""))
    cache.not_signed(set(unknown) - {int(size) for size, _ in found})
