"""Synthetic but valid ledger history, bulk-loaded so that proofs and audits can be measured
at 100k-1M entries without appending that many entries one batch at a time.

Every leaf is made by the node's own :func:`exchange.ledger.leaf.encode_leaf` from a real
:class:`Event` (a granted pull by ``bench-synthetic`` about one of 1,024 subject
pseudonyms), with the real hash chain and ``prev_subject`` back-pointers. Every complete
perfect subtree's hash at a stored level (``store.STRATUM``: every fourth) goes into
``ledger_nodes``, the head row is set, and a checkpoint of
the whole tree is signed with the node's ledger key. The writer then appends real entries
on top only after proving its first new tree consistent with that checkpoint from the
stored hashes, so a bad bulk load would halt the node instead of going unnoticed.

PostgreSQL only (binary COPY); nothing else is in the database's ledger when it runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

from exchange.ledger import merkle
from exchange.ledger.checkpoint import Checkpoint, sign_checkpoint
from exchange.ledger.leaf import Event, SubjectPseudonym, encode_leaf, subject_prefix
from exchange.ledger.leaves import Frontier
from exchange.ledger.store import is_stored
from exchange.ledger.writer import ledger_signer, origin_of
from exchange.node import Node

SUBJECTS = 1024
ACTOR = "bench-synthetic"


def pseudonyms(n: int = SUBJECTS) -> list[SubjectPseudonym]:
    return [SubjectPseudonym(hashlib.sha256(f"bench-subject-{i}".encode()).hexdigest())
            for i in range(n)]


def leaves(n: int, *, node_code: str, time_ms: int) -> Iterator[tuple[int, bytes, bytes, str]]:
    """(index, leaf bytes, leaf hash, subject) for entries 0..n-1 of a fresh ledger."""
    subjects = pseudonyms()
    last: dict[int, int] = {}
    prev = b"\0" * 32
    for i in range(n):
        s = i % SUBJECTS
        event = Event(kind="pull", actor=ACTOR, outcome="granted", subject=subjects[s],
                      item="18001000", consent="cst_bench_synthetic",
                      request_sha256=hashlib.sha256(i.to_bytes(8, "big")).hexdigest())
        leaf = encode_leaf(event, index=i, time_ms=time_ms, node=node_code, prev=prev,
                           prev_subject=last.get(s))
        h = merkle.leaf_hash(leaf)
        yield i, leaf, h, subjects[s]
        last[s] = i
        prev = h


def bulk_load(node: Node, n: int) -> dict[str, float]:
    """Load ``n`` synthetic entries, their subtree hashes, head and a signed checkpoint."""
    import psycopg

    url = node.settings.effective_database_url.replace("postgresql+psycopg://", "postgresql://")
    t0 = time.perf_counter()
    now_ms = int(node.clock.now() * 1000)
    frontier = Frontier([])
    last_hash = b"\0" * 32
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        size = cur.execute("SELECT size FROM ledger_head WHERE id = 1").fetchone()
        if size is None or size[0] != 0:
            raise RuntimeError("synthetic history goes only into an empty ledger")
        nodes: list[tuple[int, int, bytes]] = []
        with cur.copy("COPY ledger_entries (idx, leaf, leaf_hash, ref, kind, actor, subject,"
                      " time_ms, subject_prefix) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "bytea", "bytea", "text", "text", "text", "text", "int8",
                            "int8"])
            for i, leaf, h, subject in leaves(n, node_code=node.settings.node, time_ms=now_ms):
                copy.write_row((i, leaf, h, f"synthetic-{i}", "pull", ACTOR, subject, now_ms,
                                subject_prefix(subject)))
                frontier.append(i, h, nodes)
                last_hash = h
        t_entries = time.perf_counter()
        with cur.copy("COPY ledger_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int2", "int8", "bytea"])
            for row in nodes:
                if is_stored(row[0]):  # every fourth level, as the writer stores them
                    copy.write_row(row)
        root = frontier.root()
        note = sign_checkpoint(Checkpoint(origin_of(node), n, root), ledger_signer(node))
        cur.execute("UPDATE ledger_head SET size = %s, last_hash = %s WHERE id = 1",
                    (n, last_hash))
        cur.execute("INSERT INTO ledger_checkpoints (size, root, note, time_ms) "
                    "VALUES (%s, %s, %s, %s)", (n, root, note, now_ms))
        conn.commit()
        # What autovacuum does to an insert-only table once enough rows came in (the
        # bench's cluster may run with it off): statistics, and the visibility map that
        # lets a proof read its leaf hashes from the primary key's index alone.
        conn.autocommit = True
        cur.execute("VACUUM (ANALYZE) ledger_entries")
        cur.execute("VACUUM (ANALYZE) ledger_nodes")
    t1 = time.perf_counter()
    return {"entries": n, "nodes": sum(is_stored(lvl) for lvl, _, _ in nodes),
            "seconds": t1 - t0,
            "entries_seconds": t_entries - t0}
