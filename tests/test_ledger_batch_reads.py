"""What a batch reads under the lock, and when (exchange/ledger/append.py, pgbatch.py).

On PostgreSQL a batch sends the lock and every read at once, including the subtree hashes
of the head its writer expects — the head it committed last. Those hashes must be used only
when the head is that one: when another writer moved it, the batch reads the subtrees of the
real head, and the back-pointers of the subjects it asked for with the lock must still be
those of the real head. Both writers here are :class:`BatchAppender` objects over one
database, alternating, so every batch of one follows a batch of the other; the whole ledger
is then re-derived from its leaf bytes (tests/ledger_load.py ``audit``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from exchange.ledger import append, store
from exchange.ledger.append import BatchAppender
from exchange.ledger.leaf import Event
from exchange.ledger.service import verifier_key
from exchange.ledger.writer import ledger_signer
from exchange.node import Node
from tests import ledger_load as load
from tests.conftest import BACKEND


@pytest.fixture
def subtree_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes at which a batch read the subtrees on its own (not with the lock): reads
    of exactly what a batch at that size needs (other reads pass uncounted)."""
    reads: list[int] = []
    fetch: Callable[..., Any] = store.fetch_subtrees

    def counted(conn: Any, wanted: Any) -> Any:
        wanted = list(wanted)
        size = max((i for lvl, i in wanted if lvl == 0), default=None)
        if size is not None and wanted == append._probe(size):
            reads.append(size)
        return fetch(conn, wanted)

    monkeypatch.setattr(append.store, "fetch_subtrees", counted)
    return reads


def test_one_writer_reads_the_tree_with_the_lock(
    node: Node, database_url: str, subtree_reads: list[int]
) -> None:
    a = BatchAppender(node, ledger_signer(node), max_batch=64)
    a.run([], [])  # the genesis checkpoint
    done: dict[str, int] = {}
    for b in range(6):
        done |= a.run([], load.direct_events(node, f"one{b}", 5 + b))
    assert sorted(done.values()) == list(range(sum(5 + b for b in range(6))))
    if node.engine.dialect.name == "postgresql":
        # Only the first batch did not know the head to expect.
        assert subtree_reads == [0]
    else:
        assert len(subtree_reads) == 6
    load.audit(database_url, verifier_key(node))


def test_writers_taking_turns_read_the_real_head(
    node: Node, database_url: str, subtree_reads: list[int]
) -> None:
    a = BatchAppender(node, ledger_signer(node), max_batch=64)
    b = BatchAppender(node, ledger_signer(node), max_batch=64)
    a.run([], [])
    done: dict[str, int] = {}
    sizes = []
    for turn in range(8):
        writer = a if turn % 2 == 0 else b
        with node.engine.connect() as conn:
            sizes.append(store.tree_size(conn))
        # The same three subjects every time: each writer remembers where it left them,
        # and the other writer has moved them since.
        done |= writer.run([], load.direct_events(node, f"turn{turn}", 4 + turn))
    assert sorted(done.values()) == list(range(sum(4 + t for t in range(8))))
    # On PostgreSQL every batch expected a head the other writer has moved since (or, the
    # first of each writer, none): each read the subtrees of the real head itself. SQLite
    # reads them for every batch.
    assert subtree_reads == sizes
    ledger = load.audit(database_url, verifier_key(node))  # back-pointers, chain, roots
    assert len(ledger.leaves) == len(done)


def test_subjects_sharing_a_prefix_keep_their_own_back_pointers(
    node: Node, database_url: str
) -> None:
    """Entries are found by the first 64 bits of their subject (leaf.subject_prefix) and
    then the subject in full: two pseudonyms with the same prefix, interleaved, each point
    back at their own previous entry — through fresh writers that must read every
    subject's latest index from storage (the direct events' subjects with the lock, the
    outbox events' from the outbox rows), never from another's memory."""
    from exchange.ledger.leaf import SubjectPseudonym, subject_prefix
    from exchange.ledger.service import log_event

    shared = "9f" * 8  # a negative bigint: the sign bit is set
    one, two = (SubjectPseudonym(shared + c * 48) for c in "01")
    assert subject_prefix(one) == subject_prefix(two) < 0

    def event(subject: SubjectPseudonym, turn: int, i: int) -> Event:
        return Event(kind="pull", actor="prefix", outcome="granted", subject=subject,
                     request_sha256=load.request_sha("prefix", turn, i))

    BatchAppender(node, ledger_signer(node), max_batch=64).run([], [])
    for turn in range(4):
        fresh = BatchAppender(node, ledger_signer(node), max_batch=64)
        direct = [(f"prefix-{turn}-{i:020d}", event((one, two)[(turn + i) % 2], turn, i))
                  for i in range(3)]
        refs = []
        with node.sessions.begin() as session:
            refs.append(log_event(session, node, event((two, one)[turn % 2], turn, 9)))
        fresh.run(refs, direct)
    ledger = load.audit(database_url, verifier_key(node))  # each prev_subject checked
    assert len(ledger.leaves) == 16
    with node.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT subject, count(*), min(subject_prefix), max(subject_prefix)"
            " FROM ledger_entries GROUP BY subject ORDER BY subject")).all()
    assert [tuple(r) for r in rows] == [
        (one, 8, subject_prefix(one), subject_prefix(one)),
        (two, 8, subject_prefix(two), subject_prefix(two)),
    ]
    # A citizen's access log (and SQLite's back-pointers) page through the prefix's
    # entries, keeping only the subject's own.
    with node.engine.connect() as conn:

        def indices(who: str, before: int | None, limit: int) -> list[int]:
            return [e.index for e in store.subject_entries(conn, who, before=before, limit=limit)]

        for who in (one, two):
            mine = [int(i) for i in conn.execute(text(
                "SELECT idx FROM ledger_entries WHERE subject = :s ORDER BY idx DESC"),
                {"s": who}).scalars()]
            assert indices(who, None, 100) == mine
            assert indices(who, None, 3) == mine[:3]
            assert indices(who, mine[2], 2) == mine[3:5]


def _connections_cut(node: Node, database_url: str) -> None:
    """The server ends every session of the database (a restart, a failover): the batch that
    finds its connection dead fails and answers nobody; the next one, on a new connection,
    appends — one chain, nothing lost or doubled."""
    import psycopg

    a = BatchAppender(node, ledger_signer(node), max_batch=64)
    a.run([], [])
    first = a.run([], load.direct_events(node, "cut0", 5))
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    failed: dict[str, int] = {}
    with pytest.raises(Exception, match=r"(?i)terminat|closed|connection"):
        a.run([], load.direct_events(node, "cut1", 5), failed)
    assert failed == {}  # nothing was answered for the failed batch
    again = a.run([], load.direct_events(node, "cut2", 5))
    assert sorted(again.values()) == list(range(5, 10))
    ledger = load.audit(database_url, verifier_key(node))
    assert len(ledger.leaves) == len(first) + len(again) == 10


if BACKEND == "postgres":  # collected only there: its sessions can be ended from another
    test_a_writer_whose_connections_were_cut_fails_one_batch_then_goes_on = _connections_cut
