"""The schema: what the alembic migrations build is what the models declare, both ways, and
on PostgreSQL a proof's leaf-hash read never touches the ledger's heap (migration 0005), and
only outbox entries keep a ref under the unique index (migration 0006), and every entry's
subject prefix is filled in from its subject (migration 0007), and inner subtrees are stored
only at every fourth level (migration 0008)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from exchange.ledger import merkle, store
from exchange.ledger.append import BatchAppender
from exchange.ledger.leaf import Event, subject_prefix
from exchange.ledger.service import log_event, subject_pseudonym
from exchange.ledger.writer import ledger_signer
from exchange.node import Node
from exchange.persistence.migrate import alembic_config
from exchange.persistence.models import Base
from tests import ledger_load as load
from tests.conftest import BACKEND


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    """A short-lived engine of its own (disposed after), beside the node's."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _drift(url: str) -> list[Any]:
    with _engine(url) as engine, engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def _pkey_include(url: str) -> list[str]:
    """The columns the ledger_entries primary key's index carries beyond its key."""
    with _engine(url) as engine, engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.attname FROM pg_index i, generate_subscripts(i.indkey, 1) AS k"
            " JOIN pg_attribute a ON true"
            " WHERE i.indexrelid = 'ledger_entries_pkey'::regclass"
            " AND a.attrelid = i.indrelid AND a.attnum = i.indkey[k]"
            " AND k >= i.indnkeyatts ORDER BY k"  # indkey's subscripts start at 0
        ))
        return [r[0] for r in rows]


def _ref_rule(url: str) -> tuple[bool, list[tuple[bool, str | None]]]:
    """Whether ledger_entries.ref may be NULL, and each unique index on it (alone):
    (unique, its WHERE clause)."""
    with _engine(url) as engine:
        insp = inspect(engine)
        nullable = next(c["nullable"] for c in insp.get_columns("ledger_entries")
                        if c["name"] == "ref")
        rules = []
        for ix in insp.get_indexes("ledger_entries"):
            if ix["column_names"] == ["ref"] and "duplicates_constraint" not in ix:
                where = ix.get("dialect_options", {}).get(f"{engine.dialect.name}_where")
                rules.append((bool(ix["unique"]), None if where is None else str(where)))
        rules += [(True, None) for uc in insp.get_unique_constraints("ledger_entries")
                  if uc["column_names"] == ["ref"]]
        return bool(nullable), sorted(rules, key=str)


def test_migrations_build_what_the_models_declare(database_url: str) -> None:
    assert _drift(database_url) == []
    if BACKEND == "postgres":
        assert _pkey_include(database_url) == ["leaf_hash"]
    nullable, rules = _ref_rule(database_url)
    assert nullable and len(rules) == 1 and rules[0][0]
    assert "ref IS NOT NULL" in (rules[0][1] or "")  # partial: outbox entries only


def _entries(url: str) -> list[tuple[int, str | None, bytes]]:
    with _engine(url) as engine, engine.connect() as conn:
        return [(int(i), r, bytes(h)) for i, r, h in conn.execute(
            text("SELECT idx, ref, leaf_hash FROM ledger_entries ORDER BY idx"))]


def test_the_last_migrations_go_down_and_up_again(node: Node, database_url: str) -> None:
    """Down to 0004 and up again, with outbox and direct entries in the ledger: each
    migration's schema both ways, and no entry lost or changed (a direct entry's NULL ref
    gets one of its own on the way down)."""
    appender = BatchAppender(node, ledger_signer(node), max_batch=4096)
    appender.run([], [])
    ev = Event(kind="pull", actor="migrations", outcome="granted",
               subject=subject_pseudonym(node, "migrations"))
    with node.sessions.begin() as session:
        ref = log_event(session, node, ev)
    appender.run([ref], [(f"direct-{i}", ev) for i in range(3)])
    node.close()
    before = _entries(database_url)
    assert [r for _, r, _ in before] == [ref, None, None, None]
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "0005")
    assert _ref_rule(database_url) == (False, [(True, None)])
    down = _entries(database_url)
    assert [r for _, r, _ in down] == [ref, "direct-1", "direct-2", "direct-3"]
    assert [(i, h) for i, _, h in down] == [(i, h) for i, _, h in before]
    command.downgrade(cfg, "0004")
    if BACKEND == "postgres":
        assert _pkey_include(database_url) == []
    command.upgrade(cfg, "head")
    assert _drift(database_url) == []
    if BACKEND == "postgres":
        assert _pkey_include(database_url) == ["leaf_hash"]
    assert _ref_rule(database_url)[0]
    assert _entries(database_url) == down  # refs stored before stay as they are
    # 0007 filled in each entry's subject prefix from its subject (in SQL on PostgreSQL).
    with _engine(database_url) as engine, engine.connect() as conn:
        prefixes = conn.execute(text("SELECT subject, subject_prefix FROM ledger_entries")).all()
    assert len(prefixes) == 4
    assert all(p is not None and p == subject_prefix(s) for s, p in prefixes)


def _nodes(url: str) -> dict[tuple[int, int], bytes]:
    with _engine(url) as engine, engine.connect() as conn:
        return {(int(lvl), int(i)): bytes(h) for lvl, i, h in conn.execute(
            text("SELECT level, idx, hash FROM ledger_nodes"))}


def test_inner_subtrees_are_stored_at_every_fourth_level_both_ways(
    node: Node, database_url: str
) -> None:
    """The writer stores inner subtrees only at levels 4, 8, ... (store.STRATUM); going down
    past 0008 computes every other level's back from the leaves, going up deletes them."""
    appender = BatchAppender(node, ledger_signer(node), max_batch=4096)
    appender.run([], [])
    ev = Event(kind="pull", actor="strata", outcome="granted")
    for b in range(7):  # batches of several sizes, 300 entries
        appender.run([], [(f"strata-{b}-{i}", ev) for i in range(b * 10 + 15)])
    node.close()
    with _engine(database_url) as engine, engine.connect() as conn:
        tree = merkle.MemoryTree(bytes(h) for (h,) in conn.execute(
            text("SELECT leaf_hash FROM ledger_entries ORDER BY idx")))
    assert tree.size == 315
    every = {(lvl, i): tree.subtree(lvl, i)
             for lvl in range(1, 9) for i in range(tree.size >> lvl)}
    stored = {c: h for c, h in every.items() if c[0] % store.STRATUM == 0}
    assert _nodes(database_url) == stored
    cfg = alembic_config(database_url)
    command.downgrade(cfg, "0007")
    assert _nodes(database_url) == every
    command.upgrade(cfg, "head")
    assert _nodes(database_url) == stored

def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _plan_nodes(child)
    return out


@pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL's covering primary key")
def test_a_proofs_leaf_hashes_come_from_the_index_alone(node: Node) -> None:
    """After a vacuum (what autovacuum does to an insert-only table), the leaf hashes a proof
    reads are an index-only scan with no heap fetch, and are the stored hashes."""
    appender = BatchAppender(node, ledger_signer(node), max_batch=4096)
    subject = subject_pseudonym(node, "covering-index")
    events = [
        (f"cover-{i:030d}", Event(kind="pull", actor="covering", outcome="granted",
                                  subject=subject, request_sha256=load.request_sha("c", 0, i)))
        for i in range(600)
    ]
    appender.run([], [])
    for i in range(0, len(events), 200):
        appender.run([], events[i : i + 200])
    autocommit = node.engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:
        conn.execute(text("VACUUM (ANALYZE) ledger_entries"))
    with node.engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            cur.execute("SET LOCAL enable_seqscan = off")  # a 600-row table is one scan
            cur.execute("SET LOCAL enable_bitmapscan = off")
            params = {"leaves": [417, 416], "levels": [], "idxs": []}
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + store.PG_HASHES_SQL, params)
            row = cur.fetchone()
            assert row is not None
            plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
            scans = [n for n in _plan_nodes(plan[0]["Plan"])
                     if n.get("Relation Name") == "ledger_entries"]
            assert [(n["Node Type"], n.get("Index Name"), n.get("Heap Fetches")) for n in scans] == [
                ("Index Only Scan", "ledger_entries_pkey", 0)
            ]
            cur.execute(store.PG_HASHES_SQL, params)
            got = {int(i): bytes(h) for _, i, h in cur.fetchall()}
        stored = dict(conn.execute(text(
            "SELECT idx, leaf_hash FROM ledger_entries WHERE idx IN (416, 417)")).all())
    assert got == {k: bytes(v) for k, v in stored.items()} and len(got) == 2
