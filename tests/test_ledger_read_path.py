"""The proof read path (exchange.ledger.proofs, .readcache, .store): one statement, an
in-process cache of upper tree levels and of the latest checkpoint, and verification of every proof before it is served.

* A warm cache answers exactly what a cold read of storage answers, at many sizes, while the
  ledger grows (and while the cached levels move up as it does).
* The plan of which subtrees a path needs is the one merkle.inclusion_proof follows.
* Tampering: a stored hash changed after it was cached is harmless while the cache still has
  the true one (the proof served verifies against the signed checkpoint); once a path needs
  a changed hash from storage, the node refuses with LedgerIntegrityError (503 problem over
  HTTP) instead of serving a proof that does not verify against the checkpoint it names. A
  wrong cached hash (which only a bug could put there) is caught the same way: the cache is
  dropped and the proof recomputed from storage alone.

Runs on SQLite and PostgreSQL like the rest (CERTEX_TEST_DB).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from exchange.errors import InvalidInput, LedgerIntegrityError, NotFound, VerificationFailed
from exchange.ledger import merkle, proofs, readcache, store
from exchange.ledger.leaf import Event
from exchange.ledger.note import Verifier
from exchange.ledger.receipt import verify_receipt
from exchange.ledger.service import _reads, commit_wait, inclusion_proofs, log_event, verifier_key

_SMALL_LEVEL = 4  # cached levels hold at most 4 nodes: several levels stay out of the cache


def _append(node, n: int, tag: str) -> None:  # type: ignore[no-untyped-def]
    """``n`` more entries, in a few transactions (so in a few writer batches)."""
    for chunk in range(0, n, 7):
        with node.sessions.begin() as s:
            for i in range(chunk, min(n, chunk + 7)):
                sha = hashlib.sha256(f"{tag}/{i}".encode()).hexdigest()
                log_event(s, node, Event(kind="pull", actor="rp", outcome="granted",
                                         request_sha256=sha))
        commit_wait(node, s)


def _reference(node) -> merkle.MemoryTree:  # type: ignore[no-untyped-def]
    with _reads(node).connect() as conn:
        size = store.tree_size(conn)
        leaves = [merkle.leaf_hash(e.leaf) for e in store.entries(conn, 0, size)]
    return merkle.MemoryTree(leaves)


def _cold(conn, index: int, size: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    return store.with_stored_hashes(conn, lambda src: merkle.inclusion_proof(index, size, src))


@pytest.fixture
def small_cache(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(readcache, "CACHE_LEVEL_NODES", _SMALL_LEVEL)


@pytest.fixture
def ledger(node):  # type: ignore[no-untyped-def]
    node.start_ledger()
    return node


class _Coords(merkle.HashSource):
    """A source whose hash of (level, index) names it: any mix-up shows."""

    def subtree(self, level: int, index: int) -> bytes:
        return hashlib.sha256(f"{level}/{index}".encode()).digest()


class _CoordMap(dict[tuple[int, int], bytes]):
    def __missing__(self, key: tuple[int, int]) -> bytes:
        return _Coords().subtree(*key)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 2**40), data=st.data())
def test_plan_is_the_path_merkle_follows(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    plan = proofs.inclusion_plan(index, size)
    assert [proofs._fold(coords, _CoordMap()) for coords in plan] == merkle.inclusion_proof(
        index, size, _Coords()
    )


@pytest.mark.usefixtures("small_cache")
def test_warm_cache_equals_cold_store_as_the_ledger_grows(ledger) -> None:  # type: ignore[no-untyped-def]
    seen = 0
    for grow in (1, 4, 12, 16, 31, 33):
        _append(ledger, grow, f"g{seen}")
        seen += grow
        tree = _reference(ledger)
        with _reads(ledger).connect() as conn:
            assert store.tree_size(conn) == tree.size == seen
            cp = store.latest_checkpoint(conn)
            assert cp is not None and cp.size == seen and cp.root == tree.root()
            for size in sorted({min(seen, x) for x in (1, 2, 3, seen // 2 or 1, seen - 1 or 1)} | {seen}):
                for index in range(size):
                    warm = proofs.inclusion(conn, index, size)
                    assert warm == _cold(conn, index, size)
                    assert warm == merkle.inclusion_proof(index, size, tree)
                    merkle.verify_inclusion(tree.leaf(index), index, size, warm, tree.root(size))
                    again = proofs.inclusion(conn, index, size)  # now from the warm cache
                    assert again == warm
            assert readcache.read_cache(conn).nbytes() <= 2 * _SMALL_LEVEL * 32 * 8


@pytest.mark.usefixtures("small_cache")
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_batched_proofs_equal_single_ones(ledger, data) -> None:  # type: ignore[no-untyped-def]
    with _reads(ledger).connect() as conn:
        empty = store.tree_size(conn) == 0
    if empty:  # the fixture lives across examples: fill it once
        _append(ledger, 45, "batch")
    tree = _reference(ledger)
    n = tree.size
    asks = data.draw(st.lists(st.tuples(st.integers(-1, n + 1),
                                        st.one_of(st.none(), st.integers(0, n + 2))),
                              min_size=1, max_size=12))
    results = inclusion_proofs(ledger, asks)
    assert len(results) == len(asks)
    with _reads(ledger).connect() as conn:
        for (index, size), got in zip(asks, results, strict=True):
            if (size is not None and size > n) or size == 0:
                assert isinstance(got, InvalidInput)
                continue
            if index < 0 or (size is not None and index >= size):
                assert isinstance(got, InvalidInput)
                continue
            if size is None and index >= n:
                assert isinstance(got, NotFound)
                continue
            assert not isinstance(got, Exception), got
            used, proof = got
            assert used == (size if size is not None else n)
            assert proof == _cold(conn, index, used) == proofs.inclusion(conn, index, used)


def _flip(b: bytes) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:]


def _set_node(node, level: int, idx: int, value: bytes) -> None:  # type: ignore[no-untyped-def]
    with node.engine.begin() as conn:
        if level == 0:
            conn.execute(text("UPDATE ledger_entries SET leaf_hash = :h WHERE idx = :i"),
                         {"h": value, "i": idx})
        else:
            conn.execute(text("UPDATE ledger_nodes SET hash = :h WHERE level = :l AND idx = :i"),
                         {"h": value, "l": level, "i": idx})


def _stored(node, level: int, idx: int) -> bytes:  # type: ignore[no-untyped-def]
    with _reads(node).connect() as conn:
        return store.fetch_subtrees(conn, [(level, idx)])[(level, idx)]


@pytest.mark.usefixtures("small_cache")
def test_tampering_after_caching_never_serves_a_failing_proof(ledger) -> None:  # type: ignore[no-untyped-def]
    _append(ledger, 40, "tamper")
    tree = _reference(ledger)
    verifier = Verifier.from_vkey(verifier_key(ledger))
    n = tree.size  # 40: cached levels are those ≥ 4 (at most 4 nodes each)
    with _reads(ledger).connect() as conn:
        cp = store.latest_checkpoint(conn)
        assert cp is not None and cp.size == n
        for index in range(n):  # warm the cache along every path
            proofs.inclusion(conn, index, n)

        # 1. An upper node (level 4, cached) changed in storage: proofs still come from the
        #    true cached hash, so what is served verifies against the signed checkpoint.
        true_upper = _stored(ledger, 4, 1)
        _set_node(ledger, 4, 1, _flip(true_upper))
        conn.rollback()  # SQLite: end the read snapshot
        for index in range(n):
            proof = proofs.inclusion(conn, index, n)
            merkle.verify_inclusion(tree.leaf(index), index, n, proof, cp.root)
            rec = proofs.receipt(conn, index, cp)
            verify_receipt(rec, verifier=verifier, leaf_hash=tree.leaf(index))
        # ...but the writer's reads see storage, so its integrity checks are not fooled:
        # (5, 0), not stored, is folded from the stored (4, 0) and the changed (4, 1), and
        # the root of the stored tree is not the signed one.
        stored = store.fetch_subtrees(conn, [(4, 0), (4, 1), (5, 0)])
        assert stored[(4, 1)] == _flip(true_upper)
        assert stored[(5, 0)] == merkle.node_hash(stored[(4, 0)], stored[(4, 1)])
        assert store.with_stored_hashes(conn, lambda src: merkle.root_at(n, src)) != cp.root
        # A fresh process (no cache) would need the changed hash: it refuses to serve.
        readcache.drop_read_cache(conn)
        with pytest.raises(LedgerIntegrityError):
            proofs.inclusion(conn, 0, n)  # leaves 0..15 pair with subtree (4, 1)
        with pytest.raises(LedgerIntegrityError):
            proofs.receipt(conn, 0, cp)
        _set_node(ledger, 4, 1, true_upper)
        conn.rollback()  # SQLite: end the read snapshot

        # 2. A lower stored piece (leaf 7's hash, never cached) changed: every path that
        #    reads it is refused. Inner subtrees below level 4 are folded from the leaves
        #    (store.STRATUM), so those are the paths of every leaf under (4, 0), the
        #    changed one's own included; the rest take (4, 0) from the cache.
        for index in range(n):
            proofs.inclusion(conn, index, n)
        _set_node(ledger, 0, 7, _flip(tree.leaf(7)))
        conn.rollback()  # SQLite: end the read snapshot
        for index in range(n):
            if index < 16:
                with pytest.raises(LedgerIntegrityError) as refusal:
                    proofs.inclusion(conn, index, n)
                assert refusal.value.code == "tree-inconsistent"
                continue
            proof = proofs.inclusion(conn, index, n)
            merkle.verify_inclusion(tree.leaf(index), index, n, proof, cp.root)
        _set_node(ledger, 0, 7, tree.leaf(7))
        conn.rollback()  # SQLite: end the read snapshot

        # 3. A leaf hash changed: its own proof and its neighbour's are refused.
        _set_node(ledger, 0, 9, _flip(tree.leaf(9)))
        conn.rollback()  # SQLite: end the read snapshot
        for index in (8, 9):
            with pytest.raises(LedgerIntegrityError):
                proofs.inclusion(conn, index, n)
        _set_node(ledger, 0, 9, tree.leaf(9))
        conn.rollback()  # SQLite: end the read snapshot

        # 4. A size no checkpoint names: verified against the root of that size from the
        #    same hashes, so a changed piece inside it is caught too.
        size = n - 3
        _set_node(ledger, 0, 7, _flip(tree.leaf(7)))
        conn.rollback()  # SQLite: end the read snapshot
        with pytest.raises(LedgerIntegrityError):
            proofs.inclusion(conn, 4, size)
        _set_node(ledger, 0, 7, tree.leaf(7))
        conn.rollback()  # SQLite: end the read snapshot
        for index in range(size):
            proof = proofs.inclusion(conn, index, size)
            merkle.verify_inclusion(tree.leaf(index), index, size, proof, tree.root(size))


@pytest.mark.usefixtures("small_cache")
def test_a_wrong_cached_hash_is_caught_and_dropped(ledger) -> None:  # type: ignore[no-untyped-def]
    _append(ledger, 40, "poison")
    tree = _reference(ledger)
    n = tree.size
    with _reads(ledger).connect() as conn:
        for index in range(n):
            proofs.inclusion(conn, index, n)
        cache = readcache.read_cache(conn)
        cache.keep({(4, 1): b"\x11" * 32})  # what only a bug could do
        for index in range(n):
            proof = proofs.inclusion(conn, index, n)
            merkle.verify_inclusion(tree.leaf(index), index, n, proof, tree.root())
        assert cache.split([(4, 1)], n)[0].get((4, 1)) in (None, tree.subtree(4, 1))


def test_cache_memory_is_bounded(ledger) -> None:  # type: ignore[no-untyped-def]
    _append(ledger, 20, "mem")
    with _reads(ledger).connect() as conn:
        cache = readcache.read_cache(conn)
        cache.keep({(lvl, i): b"\x22" * 32 for lvl in range(1, 40) for i in (0, 5, 2**20)})
        # Nothing past CACHE_LEVEL_NODES in a level: < 2 MB each, whatever is asked.
        assert all(row is None or len(row) <= readcache.CACHE_LEVEL_NODES * 32
                   for row in cache._levels)
        assert any(row is not None for row in cache._levels)
        readcache.drop_read_cache(conn)


def test_checkpoint_cache_sees_this_process_commits(ledger) -> None:  # type: ignore[no-untyped-def]
    _append(ledger, 3, "cp")
    with _reads(ledger).connect() as conn:
        assert (cp := readcache.recent_checkpoint(conn)) is not None and cp.size == 3
    _append(ledger, 2, "cp2")  # the writer commits a new checkpoint: the cached one is dropped
    with _reads(ledger).connect() as conn:
        assert (cp := readcache.recent_checkpoint(conn)) is not None and cp.size == 5
        assert readcache.checkpoint_covering(conn, 4).size == 5
        with pytest.raises(NotFound):
            readcache.checkpoint_covering(conn, 5)


@pytest.mark.usefixtures("small_cache")
def test_http_proofs_batched_concurrently(app, ledger) -> None:  # type: ignore[no-untyped-def]
    _append(ledger, 21, "http")
    tree = _reference(ledger)
    n = tree.size
    queries = [f"index={i}&size={n}" for i in range(n)] + [f"index={i}" for i in range(0, n, 3)]
    queries += ["index=5&size=3", f"index=0&size={n + 1}", "index=-1", f"index={n}"]

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return list(await asyncio.gather(
                *(c.get(f"/v1/ledger/proof/inclusion?{q}") for q in queries)))

    responses = asyncio.run(run())
    for q, r in zip(queries, responses, strict=True):
        args = dict(kv.split("=") for kv in q.split("&"))
        index, size = int(args["index"]), int(args.get("size", n))
        if not 0 <= index < size or size > n:
            want = 404 if "size" not in args and index >= n else 400
            assert r.status_code == want, (q, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            continue
        assert r.status_code == 200, (q, r.text)
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert list(body) == ["proof", "index", "size"]
        assert body["index"] == index and body["size"] == size
        proof = [base64.b64decode(h) for h in body["proof"]]
        merkle.verify_inclusion(tree.leaf(index), index, size, proof, tree.root(size))
        with pytest.raises(VerificationFailed):
            merkle.verify_inclusion(_flip(tree.leaf(index)), index, size, proof, tree.root(size))


def test_batched_receipts_equal_single_ones_and_verify(ledger) -> None:  # type: ignore[no-untyped-def]
    """``receipts`` (what concurrent pulls share) gives, per index, exactly the receipt
    ``receipt`` gives alone, each verifying against its checkpoint; errors stay per index."""
    from exchange.ledger.service import receipt, receipts

    _append(ledger, 37, "receipts")
    tree = _reference(ledger)
    n = tree.size
    verifier = Verifier.from_vkey(verifier_key(ledger))
    asks = [0, n - 1, 5, 5, n, n + 7, 17]
    got = receipts(ledger, asks)
    for index, r in zip(asks, got, strict=True):
        if index >= n:
            assert isinstance(r, NotFound)
            continue
        assert isinstance(r, str)
        assert r == receipt(ledger, index)
        assert verify_receipt(r, verifier=verifier, leaf_hash=tree.leaf(index)).index == index


# -- proofs answered from the cache alone (the HTTP route's path without a worker thread) ---


def test_cached_inclusion_answers_what_storage_answers_and_never_reads(ledger) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import event

    _append(ledger, 37, "fast")
    tree = _reference(ledger)
    n = tree.size
    engine = _reads(ledger)
    with engine.connect() as conn:
        readcache.drop_read_cache(conn)
    assert proofs.cached_inclusion(engine, 3, n) is None  # cold: nothing cached yet
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    sizes = sorted({1, 2, 5, 16, 17, n - 1, n})
    for size in sizes:  # warm the cache through the batched path (it reads storage)
        inclusion_proofs(ledger, [(i, size) for i in range(size)])
    inclusion_proofs(ledger, [(0, None)])  # the latest checkpoint, fresh
    event.listen(ledger.engine, "before_cursor_execute", count)
    try:
        # The latest first, while the cached checkpoint is fresh (CHECKPOINT_MAX_AGE: the
        # loop below can take longer than that on a slow host).
        latest = proofs.cached_inclusion(engine, 5, None)
        assert latest == (n, merkle.inclusion_proof(5, n, tree))
        for size in sizes:
            for index in range(size):
                got = proofs.cached_inclusion(engine, index, size)
                assert got == (size, merkle.inclusion_proof(index, size, tree)), (index, size)
                merkle.verify_inclusion(tree.leaf(index), index, size, got[1], tree.root(size))
        # Out of range or past the checkpoint it knows: left to the batched path.
        for index, size in ((n, n), (-1, n), (0, n + 1), (0, 0), (5, 3)):
            assert proofs.cached_inclusion(engine, index, size) is None
    finally:
        event.remove(ledger.engine, "before_cursor_execute", count)
    assert statements == []


def test_cached_inclusion_of_the_latest_needs_a_fresh_checkpoint(ledger, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _append(ledger, 9, "fresh")
    engine = _reads(ledger)
    inclusion_proofs(ledger, [(i, None) for i in range(9)])
    assert proofs.cached_inclusion(engine, 2, None) is not None
    monkeypatch.setattr(readcache, "CHECKPOINT_MAX_AGE", -1.0)  # every cached checkpoint stale
    assert proofs.cached_inclusion(engine, 2, None) is None
    assert proofs.cached_inclusion(engine, 2, 9) is not None  # an explicit size needs none


def test_a_size_within_a_seen_checkpoint_reads_no_head_or_checkpoint(ledger) -> None:  # type: ignore[no-untyped-def]
    """A tree only grows: a size within a checkpoint this process has seen is bounded by it
    however old it is, so a proof for it reads neither the head nor a newer checkpoint (a
    re-read every CHECKPOINT_MAX_AGE made every ~50th in-process proof two statements)."""
    from sqlalchemy import event

    _append(ledger, 12, "bounded")
    tree = _reference(ledger)
    n = tree.size
    read: list[str] = []

    def count(*args: object) -> None:
        sql = str(args[2])
        if "ledger_head" in sql or "ledger_checkpoints" in sql:
            read.append(sql)

    with ledger.engine.connect() as conn:
        proofs.inclusion(conn, 0, n)  # sees the latest checkpoint (n)
        cache = readcache.read_cache(conn)
        event.listen(ledger.engine, "before_cursor_execute", count)
        try:
            for index in range(n):
                for size in (index + 1, n):
                    cache.checkpoint_at -= 10 * readcache.CHECKPOINT_MAX_AGE  # stale
                    proof = proofs.inclusion(conn, index, size)
                    merkle.verify_inclusion(
                        tree.leaf(index), index, size, proof, tree.root(size)
                    )
            assert read == []
            # Past what it has seen: the tree's size is read, and a size past it refused.
            with pytest.raises(InvalidInput):
                proofs.inclusion(conn, 0, n + 1)
            assert read
        finally:
            event.remove(ledger.engine, "before_cursor_execute", count)


def test_cached_inclusion_never_serves_a_wrong_cached_hash(ledger) -> None:  # type: ignore[no-untyped-def]
    _append(ledger, 24, "wrong")
    tree = _reference(ledger)
    n = tree.size
    engine = _reads(ledger)
    inclusion_proofs(ledger, [(i, n) for i in range(n)])
    with engine.connect() as conn:
        cache = readcache.read_cache(conn)
    cache.keep({(1, 2): b"\x11" * 32})  # what only a bug could do
    for index in range(n):
        got = proofs.cached_inclusion(engine, index, n)
        if got is not None:  # paths that do not use (1, 2) are still right
            merkle.verify_inclusion(tree.leaf(index), index, n, got[1], tree.root())
            assert got[1] == merkle.inclusion_proof(index, n, tree)
    for index in (6, 7):  # (1, 2) = leaves 4-5 is a sibling on their paths
        assert proofs.cached_inclusion(engine, index, n) is None
    # ... and the batched path drops the bad hash and answers from storage.
    (size, proof), = inclusion_proofs(ledger, [(6, n)])
    assert size == n and proof == merkle.inclusion_proof(6, n, tree)


def test_proofs_for_an_older_checkpoint_size_use_its_signed_root(ledger) -> None:  # type: ignore[no-untyped-def]
    """A proof asked at an older checkpoint's size verifies against that signed root (read
    once, then known); a size that is no checkpoint's is remembered as unsigned, and its
    proofs verify against the root computed from the same hashes, as before."""
    _append(ledger, 5, "old")
    engine = _reads(ledger)
    with engine.connect() as conn:
        old = store.latest_checkpoint(conn)
    assert old is not None
    _append(ledger, 9, "new")
    tree = _reference(ledger)
    with engine.connect() as conn:
        readcache.drop_read_cache(conn)
        cache = readcache.read_cache(conn)
    ((size, proof),) = inclusion_proofs(ledger, [(2, old.size)])
    assert size == old.size and cache.roots.get(old.size) == old.root == tree.root(old.size)
    merkle.verify_inclusion(tree.leaf(2), 2, old.size, proof, old.root)
    with engine.connect() as conn:
        cps = {int(r[0]) for r in conn.exec_driver_sql("SELECT size FROM ledger_checkpoints")}
    unsigned_size = next(s for s in range(2, tree.size) if s not in cps)
    inclusion_proofs(ledger, [(1, unsigned_size)])
    assert unsigned_size in cache.unsigned and unsigned_size not in cache.roots
    assert proofs.cached_inclusion(engine, 1, unsigned_size) == (
        unsigned_size, merkle.inclusion_proof(1, unsigned_size, tree))
