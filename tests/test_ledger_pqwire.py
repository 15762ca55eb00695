"""The ledger writer's statements through libpq (exchange/ledger/pqwire.py), on PostgreSQL.

The wire prepares its statements once per connection under names of its own, beside
psycopg's; psycopg deallocates every prepared statement of a session when it rolls back one
in which it prepared its own (and anyone may ``DEALLOCATE ALL``). These tests take the
statements away under the wire in each of those ways, fail statements in the middle of a
pipeline and of a script, and put hostile text through the one value the writer quotes
(the checkpoint note).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from exchange.ledger import pgbatch, pqwire
from exchange.ledger.append import BatchAppender
from exchange.ledger.service import verifier_key
from exchange.ledger.writer import ledger_signer
from exchange.node import Node
from tests import ledger_load as load
from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="libpq is PostgreSQL's")

A = pqwire.Statement("test_a", "SELECT $1::int8 * 2, $2::text")
B = pqwire.Statement("test_b", "SELECT $1::int8 + 1")
ZERO = pqwire.Statement("test_zero", "SELECT 1 / $1::int4")


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as c:
        yield c


def _ours(conn: psycopg.Connection[Any]) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'certex%'")
        names = {r[0] for r in cur.fetchall()}
    conn.commit()  # (a rollback could make psycopg deallocate everything)
    return names


def _run(conn: psycopg.Connection[Any], n: int) -> tuple[int, str, int]:
    a, b = pqwire.Wire(conn).pipeline(
        [(A, [str(n).encode(), "ünï'\\".encode()]), (B, [str(n).encode()])]
    )
    got = (pqwire.int8(a.get_value(0, 0)), a.get_value(0, 1), pqwire.int8(b.get_value(0, 0)))
    conn.commit()
    assert got[0] is not None and got[1] is not None and got[2] is not None
    return got[0], bytes(got[1]).decode(), got[2]


def test_a_pipeline_begins_a_transaction_and_reads_binary(conn: psycopg.Connection[Any]) -> None:
    assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    w = pqwire.Wire(conn)
    (a,) = w.pipeline([(A, [b"-21", b"x"])])
    assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert pqwire.int8(a.get_value(0, 0)) == -42
    conn.rollback()
    assert _run(conn, 5) == (10, "ünï'\\", 6)
    assert _ours(conn) == {"certex_test_a", "certex_test_b"}


def test_psycopg_deallocating_everything_is_survived(conn: psycopg.Connection[Any]) -> None:
    assert _run(conn, 1) == (2, "ünï'\\", 2)
    # psycopg prepares a statement of its own, then rolls back: DEALLOCATE ALL.
    for _ in range(3):
        conn.execute("SELECT %s::int", [1], prepare=True)
    conn.rollback()
    assert _ours(conn) == set()
    assert _run(conn, 2) == (4, "ünï'\\", 3)
    assert _ours(conn) == {"certex_test_a", "certex_test_b"}


def test_one_statement_taken_away_is_prepared_again_alone(conn: psycopg.Connection[Any]) -> None:
    _run(conn, 1)
    conn.execute("DEALLOCATE certex_test_a")  # b stays: preparing it again would fail
    conn.commit()
    assert _ours(conn) == {"certex_test_b"}
    assert _run(conn, 7) == (14, "ünï'\\", 8)
    assert _ours(conn) == {"certex_test_a", "certex_test_b"}


def test_inside_someone_elses_transaction_a_missing_statement_is_an_error(
    conn: psycopg.Connection[Any],
) -> None:
    _run(conn, 1)
    conn.execute("DEALLOCATE ALL")  # in a transaction psycopg opened: not the wire's to undo
    with pytest.raises(psycopg.errors.InvalidSqlStatementName):
        pqwire.Wire(conn).pipeline([(A, [b"1", b"x"])])
    conn.rollback()
    assert _run(conn, 3) == (6, "ünï'\\", 4)


def test_a_failing_statement_raises_its_own_error(conn: psycopg.Connection[Any]) -> None:
    w = pqwire.Wire(conn)
    with pytest.raises(psycopg.errors.DivisionByZero):
        w.pipeline([(B, [b"1"]), (ZERO, [b"0"]), (A, [b"1", b"x"])])
    assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR
    conn.rollback()
    # The statements prepared in the failed pipeline are known and used; the others come.
    assert _run(conn, 4) == (8, "ünï'\\", 5)
    (z,) = w.pipeline([(ZERO, [b"1"])])
    assert z.get_value(0, 0) == (1).to_bytes(4, "big")
    conn.rollback()


def test_a_script_copies_in_and_quotes_the_note(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE t (i int8, h int2, b bytea, s text)")
    conn.commit()
    rows = [(-(2**63), -1, b"", "é\t\"'\\"), (2**63 - 1, 32767, bytes(range(256)), None),
            (0, 0, None, "")]
    data = pgbatch.copy_binary(rows, ["int8", "int2", "bytea", "text"])
    w = pqwire.Wire(conn)
    hostile = "x'); DROP TABLE t; --\\' $$ ''\n\u2028 ü"
    conn.execute("SELECT 1")  # a transaction is open
    w.script(
        b"COPY t (i, h, b, s) FROM STDIN (FORMAT BINARY);\n"
        b"INSERT INTO t (i, s) VALUES (1, " + w.literal(hostile) + b")",
        [data],
    )
    conn.commit()
    got = conn.execute("SELECT i, h, b, s FROM t ORDER BY i NULLS FIRST, s").fetchall()
    expected = [(*r[:2], None if r[2] is None else r[2], r[3]) for r in rows]
    expected.append((1, None, None, hostile))
    assert sorted(got, key=repr) == sorted(expected, key=repr)


def test_a_script_that_fails_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE t (i int8 PRIMARY KEY)")
    conn.commit()
    w = pqwire.Wire(conn)
    conn.execute("SELECT 1")
    with pytest.raises(psycopg.errors.UniqueViolation):
        w.script(
            b"COPY t (i) FROM STDIN (FORMAT BINARY); INSERT INTO t VALUES (1); SELECT 1",
            [pgbatch.copy_binary([(1,), (2,)], ["int8"])],
        )
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    # More data than COPYs, and a COPY without data, are refused too.
    conn.execute("SELECT 1")
    with pytest.raises(psycopg.ProgrammingError):
        w.script(b"SELECT 1", [b"x"])
    conn.rollback()
    conn.execute("SELECT 1")
    with pytest.raises(psycopg.errors.QueryCanceled):
        w.script(b"COPY t (i) FROM STDIN (FORMAT BINARY)", [])
    conn.rollback()
    with pytest.raises(psycopg.ProgrammingError):  # never outside a transaction
        w.script(b"INSERT INTO t VALUES (3)", [])
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_the_writer_goes_on_after_its_connections_lost_their_statements(
    node: Node, database_url: str
) -> None:
    a = BatchAppender(node, ledger_signer(node), max_batch=64)
    a.run([], [])

    done = a.run([], load.direct_events(node, "one", 5))
    # Every pooled connection (the writer's among them) loses every prepared statement.
    pool = node.engine.pool
    held = [node.engine.raw_connection() for _ in range(pool.checkedin())]  # type: ignore[attr-defined]
    assert held
    for dbapi in held:
        with dbapi.cursor() as cur:
            cur.execute("DEALLOCATE ALL")
        dbapi.commit()
        dbapi.close()
    done |= a.run([], load.direct_events(node, "two", 5))
    assert sorted(done.values()) == list(range(10))
    load.audit(database_url, verifier_key(node))
