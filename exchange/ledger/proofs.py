"""Inclusion and consistency proofs, and receipts, as the node serves them.

Proofs touch O(log n) stored hashes: which (level, index) pairs a proof needs depends only
on its index and size, so every proof is planned first (:func:`inclusion_plan`), its hashes
taken from the read path's cache (:mod:`.readcache`) and the rest read in ONE statement
(:func:`.store.fetch_subtrees`). A proof whose every hash is cached is answered by
:func:`cached_inclusion` without touching the database (the HTTP route then needs no worker
thread); any other goes to :func:`inclusion_many`.

Every proof served is verified before it is returned: against the signed root when its size
is a checkpoint this process has seen, otherwise against the root of that size computed from
the same hashes. A proof that fails (a stored hash changed under the cache, or storage
tampered with) is retried once from storage alone with the cache dropped; if that fails too,
:class:`LedgerIntegrityError` is raised — the node never serves a proof that does not verify
against the checkpoint it names.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine

from exchange.errors import ExchangeError, InvalidInput, LedgerIntegrityError, VerificationFailed
from exchange.ledger import merkle
from exchange.ledger.readcache import (
    cached,
    checkpoint_bounding,
    checkpoint_covering,
    learn_roots,
    read_cache,
)
from exchange.ledger.receipt import make_receipt
from exchange.ledger.store import (
    Coord,
    StoredCheckpoint,
    decomposition,
    fetch_subtrees,
    missing_subtree,
    tree_size,
    with_stored_hashes,
)


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
            m = n - k  # the right part; one perfect subtree unless on the ragged edge
            if m & (m - 1):
                plan.append(decomposition(start + k, m))
            else:
                level = m.bit_length() - 1
                plan.append([(level, (start + k) >> level)])
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
        raise missing_subtree(*e.args[0]) from None
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
    try:
        proof = [hashes[c[0]] if len(c) == 1 else _fold(c, hashes) for c in plan]
    except KeyError as e:
        raise missing_subtree(*e.args[0]) from None
    if root is None:
        root = _fold(decomposition(0, size), hashes)
    leaf = hashes.get((0, index))
    if leaf is None:
        raise missing_subtree(0, index)
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
        wanted.update(decomposition(0, size))
    return plan


def _verified_inclusions(
    conn: Connection, asks: Sequence[tuple[int, int, bytes | None]]
) -> list[list[bytes] | LedgerIntegrityError]:
    """Verified audit paths for ``(index, size, root or None)``, all read in one statement."""
    cache = read_cache(conn)
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
        read = fetch_subtrees(conn, missing)
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
            cold = fetch_subtrees(conn, wanted)
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
    cache = cached(engine)
    cp = None if cache is None else cache.checkpoint
    if cache is None or cp is None:
        return None
    if size is None:
        if not cache.fresh():
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

    A size within a signed checkpoint this process has seen needs no read of the tree's
    size or of a newer checkpoint (trees only grow)."""
    cp = checkpoint_bounding(conn, size)
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
            cp = checkpoint_bounding(conn, size)
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
        learn_roots(conn, {size for _, size, _ in ok})
        for pos, (_, size, _), proof in zip(where, ok, _verified_inclusions(conn, ok), strict=True):
            out[pos] = proof if isinstance(proof, ExchangeError) else (size, proof)
    return out


def consistency(conn: Connection, first: int, second: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof between two tree sizes."""
    _check_sizes(first=first, size=second, limit=tree_size(conn))
    return with_stored_hashes(conn, lambda src: merkle.consistency_proof(first, second, src))


def receipt(conn: Connection, index: int, cp: StoredCheckpoint | None = None) -> str:
    """A C2SP tlog-proof@v1 receipt for ``index`` under ``cp`` (default: the latest
    signed checkpoint, which must cover it)."""
    if cp is None or cp.size <= index:
        cp = checkpoint_covering(conn, index)
    read_cache(conn).remember(cp)
    path = _verified_inclusion(conn, index, cp.size, cp.root)
    return make_receipt(index, path, cp.note)


def receipts(conn: Connection, indices: Sequence[int]) -> list[str | ExchangeError]:
    """:func:`receipt` for many indices, each under the latest checkpoint covering it; all
    the hashes come from the cache or ONE statement. The receipt or the error, per index."""
    out: list[str | ExchangeError] = []
    asks: list[tuple[int, int, bytes | None]] = []
    notes: list[tuple[int, str]] = []  # (position in out, checkpoint note)
    cache = read_cache(conn)
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
