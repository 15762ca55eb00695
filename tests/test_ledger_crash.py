"""The ledger when things go wrong (DESIGN.md §2.1, §2.5).

* Processes appending through their writers are killed with SIGKILL mid-stream; a fresh
  process appends the outbox rows the dead ones left, the whole ledger verifies, and every
  index that was answered before a kill is in the final signed checkpoint.
* When the ledger cannot commit (the ledger tables locked past the wait timeout, or the
  database refusing ledger writes), ``wait`` raises LedgerUnavailable and issuing a
  certificate answers 503 problem+json; once the database is back, the outbox catches up.
* When stored ledger data no longer matches what was signed, the writer halts and signs
  nothing more.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, select, text

from exchange.errors import LedgerUnavailable
from exchange.ledger.leaf import Event, decode_leaf
from exchange.ledger.service import commit_wait, log_event, verifier_key
from exchange.ledger.writer import LedgerWriter
from exchange.node import Node
from exchange.persistence.db import make_engine
from exchange.persistence.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerOutbox
from tests import ledger_load as load
from tests.conftest import BACKEND
from tests.helpers import BUSINESS_LICENSE, access_token, add_agency, bearer, new_uscc

WAIT_TIMEOUT = 1.0  # how long a caller waits for the ledger in the failure-path tests


# -- SIGKILL mid-stream -----------------------------------------------------------------------


def _outbox_refs(database_url: str) -> set[str]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(select(LedgerOutbox.ref)))
    finally:
        engine.dispose()


def _appended_refs(database_url: str) -> set[str]:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(select(LedgerEntry.ref)))
    finally:
        engine.dispose()


def test_kill_9_mid_stream_loses_no_answered_index(database_url: str, tmp_path: Path) -> None:
    settings = load.settings_for(database_url, tmp_path / "home")
    vkey = load.prepare(settings)
    logs = tmp_path / "logs"
    rng = random.Random(os.getpid())
    answered: dict[str, int] = {}
    left: set[str] = set()  # outbox refs a killed process left behind
    # 1. Three appending processes, each killed wherever it is (mid-batch, mid-commit...).
    for rnd in range(3):
        w = load.spawn(settings, logs, f"killed{rnd}", threads=4, count=10**6)
        w.wait_for(lambda w: len(w.answered()) >= 40, 60, "40 answered appends")
        time.sleep(rng.uniform(0, 0.3))
        os.kill(w.proc.pid, signal.SIGKILL)
        assert w.proc.wait(timeout=10) == -signal.SIGKILL
        assert not [line for line in w.lines() if line.startswith("error")], w.diagnostics()
        answered.update(w.answered())
        left |= _outbox_refs(database_url)
    # 2. A process that commits three events and dies before its writer appends them (as a
    #    gateway killed between its commit and its wait): they are certainly left behind.
    w = load.spawn(
        settings, logs, "committed", "--linger=3", "--linger-seconds=600", threads=0, count=0
    )
    w.wait_for(lambda w: len(w.committed()) == 3, 60, "3 committed events")
    os.kill(w.proc.pid, signal.SIGKILL)
    w.proc.wait(timeout=10)
    committed = w.committed()
    orphans = _outbox_refs(database_url)
    assert len(orphans) >= 3
    left |= orphans
    # 3. A fresh process appends them with its own events; the whole ledger verifies.
    fresh = load.spawn(settings, logs, "fresh", threads=2, count=10)
    answered.update(fresh.finish(timeout=60))

    ledger = load.audit(database_url, vkey)  # chain, roots, consistency of every checkpoint
    assert ledger.outbox == 0
    assert left <= _appended_refs(database_url), "rows of the killed processes were lost"
    assert committed <= ledger.by_request.keys()
    load.assert_included(database_url, ledger, answered)  # every index told before a kill


# -- the ledger cannot commit ------------------------------------------------------------------


@contextmanager
def _ledger_locked(database_url: str) -> Iterator[None]:
    """Another connection holds the lock the writer needs, until the block ends.

    PostgreSQL: ``LOCK TABLE ledger_head`` (the domain tables stay writable). SQLite has no
    table locks: the database's write lock, taken with ``BEGIN IMMEDIATE``.
    """
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("LOCK TABLE ledger_head IN ACCESS EXCLUSIVE MODE"))
                yield
                conn.rollback()
    finally:
        engine.dispose()


_REFUSE_SQLITE = """
CREATE TRIGGER certex_test_refuse BEFORE INSERT ON ledger_entries
BEGIN SELECT RAISE(ABORT, 'ledger storage refuses writes'); END
"""
_REFUSE_PG = (
    """CREATE FUNCTION certex_test_refuse() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'ledger storage refuses writes'; END $$""",
    """CREATE TRIGGER certex_test_refuse BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION certex_test_refuse()""",
)


@contextmanager
def _ledger_refused(database_url: str) -> Iterator[None]:
    """The database rejects every insert into ledger_entries until the block ends."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            for sql in _REFUSE_PG if conn.dialect.name == "postgresql" else (_REFUSE_SQLITE,):
                conn.execute(text(sql))
        yield
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("DROP TRIGGER certex_test_refuse ON ledger_entries"))
                conn.execute(text("DROP FUNCTION certex_test_refuse()"))
            else:
                conn.execute(text("DROP TRIGGER certex_test_refuse"))
    finally:
        engine.dispose()


def _start_writer(node: Node, wait_timeout: float) -> LedgerWriter:
    """Install the node's ledger writer, one that gives up on a caller after ``wait_timeout``."""
    node.ledger = LedgerWriter(node, wait_timeout=wait_timeout)
    node.ledger.start()
    return node.ledger


def _event(n: int) -> Event:
    return Event(kind="pull", actor="load", outcome="granted", request_sha256=f"{n:064x}")


def _log(node: Node, n: int) -> list[int]:
    """Record event ``n`` as a request handler does; the indices ``wait`` answered."""
    with node.sessions.begin() as session:
        log_event(session, node, _event(n))
    return commit_wait(node, session)


def _checkpoints(conn: Connection) -> list[int]:
    return list(conn.scalars(select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.size)))


def test_wait_raises_while_the_ledger_is_locked(node: Node, database_url: str) -> None:
    w = _start_writer(node, wait_timeout=WAIT_TIMEOUT)
    assert _log(node, 1) == [0]
    with node.sessions.begin() as session:
        log_event(session, node, _event(2))
    with _ledger_locked(database_url):
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="did not commit in time"):
            commit_wait(node, session)
        assert WAIT_TIMEOUT <= time.monotonic() - started < WAIT_TIMEOUT + 3
    # Only delayed: the blocked batch completes, the writer is not halted, callers go on.
    assert w.halted is None
    assert _log(node, 3) == [2]
    with node.engine.connect() as conn:
        indices = conn.execute(select(LedgerEntry.idx).order_by(LedgerEntry.idx)).scalars().all()
        assert indices == [0, 1, 2] and _checkpoints(conn)[-1] == 3


@pytest.fixture
def app(node):  # type: ignore[no-untyped-def]
    """The app over a writer that gives up after WAIT_TIMEOUT instead of 15 s."""
    from gateway.app import create_app

    _start_writer(node, wait_timeout=WAIT_TIMEOUT)
    return create_app(node)


BREAKS = ["refuse", "lock"] if BACKEND == "postgres" else ["refuse"]  # SQLite: no table locks


@pytest.mark.parametrize("how", BREAKS)
def test_issue_answers_503_when_the_ledger_cannot_commit(  # type: ignore[no-untyped-def]
    http, node, database_url: str, how: str
) -> None:
    agency = add_agency(node, ["business-license"])
    token = access_token(http, node, agency)

    def issue():  # type: ignore[no-untyped-def]
        return http.post(
            "/v1/certificates",
            headers=bearer(token),
            json={"type": "business-license", "subject_id": new_uscc(), "claims": BUSINESS_LICENSE},
        )

    assert issue().status_code == 201
    with node.engine.connect() as conn:
        signed = _checkpoints(conn)
    broken = _ledger_refused if how == "refuse" else _ledger_locked
    with broken(database_url):
        r = issue()
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        problem = r.json()
        assert problem["type"] == "urn:certex:problem:ledger-unavailable"
        assert problem["status"] == 503
        with node.engine.connect() as conn:  # nothing was signed while the ledger was down
            assert _checkpoints(conn) == signed
    assert node.ledger is not None and node.ledger.halted is None
    # The 503 event was committed with its certificate: the next batch appends it (refused)
    # or the delayed one does (locked).
    assert issue().status_code == 201
    ledger = load.audit(database_url, verifier_key(node))
    assert ledger.outbox == 0
    kinds = [decode_leaf(leaf).kind for leaf in ledger.leaves]
    assert kinds == ["certificate.issued"] * 3


# -- integrity alarm ---------------------------------------------------------------------------


def _tamper(conn: Connection, how: str) -> None:
    """Rewrite stored ledger data of a 6-entry ledger (18 for "subtree-hash") behind the
    writer's back."""
    forged = b"\xee" * 32
    entry3 = conn.execute(select(LedgerEntry.leaf_hash).where(LedgerEntry.idx == 3)).scalar_one()
    if how == "subtree-hash":  # the perfect subtree over leaves 0..15 (a stored level: 4)
        changed = conn.execute(
            text("UPDATE ledger_nodes SET hash = :h WHERE level = 4 AND idx = 0"), {"h": forged}
        )
        assert changed.rowcount == 1
    elif how == "last-leaf-hash":
        conn.execute(text("UPDATE ledger_entries SET leaf_hash = :h WHERE idx = 5"), {"h": forged})
    elif how == "truncated":  # entries 4, 5 gone (no subtree over them is stored), the
        # head rolled back
        conn.execute(text("DELETE FROM ledger_entries WHERE idx >= 4"))
        conn.execute(text("UPDATE ledger_head SET size = 4, last_hash = :h"), {"h": entry3})
    elif how == "head-rolled-back":  # entries kept, the head says 4
        conn.execute(text("UPDATE ledger_head SET size = 4, last_hash = :h"), {"h": entry3})
    elif how == "head-and-checkpoints-rolled-back":  # as if the ledger had stopped at 4
        conn.execute(text("UPDATE ledger_head SET size = 4, last_hash = :h"), {"h": entry3})
        conn.execute(text("DELETE FROM ledger_checkpoints WHERE size > 4"))
    else:
        raise AssertionError(how)


TAMPERS = [
    "subtree-hash",
    "last-leaf-hash",
    "truncated",
    # Regressions: these two ended in a duplicate-key error on the next append, which the
    # writer retried on every batch as if the database were down, never raising the alarm.
    "head-rolled-back",
    "head-and-checkpoints-rolled-back",
]


@pytest.mark.parametrize("how", TAMPERS)
def test_tampered_ledger_halts_the_writer(node: Node, database_url: str, how: str) -> None:
    w = node.start_ledger()
    count = 18 if how == "subtree-hash" else 6  # a stored inner subtree needs 16 leaves
    for n in range(count):  # one batch (and checkpoint) each
        assert _log(node, n) == [n]
    with node.engine.begin() as conn:
        assert _checkpoints(conn) == list(range(count + 1))
        _tamper(conn, how)
    with node.engine.connect() as conn:
        signed = _checkpoints(conn)
        head = conn.execute(select(LedgerHead.size, LedgerHead.last_hash)).one()

    with pytest.raises(LedgerUnavailable, match="integrity"):
        _log(node, count)
    assert w.halted
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match="stopped"):
        _log(node, count + 1)
    assert time.monotonic() - started < 1  # refused at once, not after a timeout
    with node.engine.connect() as conn:
        assert _checkpoints(conn) == signed, "signed a checkpoint over tampered data"
        assert conn.execute(select(LedgerHead.size, LedgerHead.last_hash)).one() == head


def test_rewritten_old_entry_is_caught_by_the_audit(node: Node, database_url: str) -> None:
    """The writer re-reads only the O(log n) hashes it builds on, not every old leaf: a
    rewritten old entry is for the full audit to find (and this suite's audit finds it)."""
    node.start_ledger()
    for n in range(6):
        _log(node, n)
    vkey = verifier_key(node)
    load.audit(database_url, vkey)
    with node.engine.begin() as conn:
        leaf = conn.execute(select(LedgerEntry.leaf).where(LedgerEntry.idx == 1)).scalar_one()
        forged = bytes(leaf).replace(b'"granted"', b'"denied"')
        conn.execute(text("UPDATE ledger_entries SET leaf = :l WHERE idx = 1"), {"l": forged})
    with pytest.raises(AssertionError, match="entry 1: stored hash differs"):
        load.audit(database_url, vkey)
