"""The ledger writer's statements straight through libpq (psycopg's ``pq`` layer).

A statement through psycopg's ``Connection.execute`` costs tens of microseconds of Python
(a cursor, the query's conversion, the prepared-statement manager, the result's wrapping and
loading) before and after the server's own work; a batch runs a dozen, in the writer's
thread, while its callers wait. Here the same statements go through the ``PGconn`` under
that psycopg connection: prepared once per connection under names of ours, parameters as
text, results read in binary by the few decoders below. Measured (``bench/PROFILE.md``,
thirteenth round): a pipeline of the transaction's first five statements cost 353 µs of
the thread's CPU through psycopg and 64 µs here.

Everything runs in the transaction the psycopg connection is in (BEGIN is sent here when
none is open yet, as psycopg would have); waits are ``poll`` on the socket (the GIL is
released), never a blocking libpq call. A statement that fails raises psycopg's error for
its SQLSTATE after the rest of its pipeline has been read, so the connection is left in a
failed transaction that the caller's rollback ends — or, if the exchange itself broke, closed,
so that the pool does not hand it out again.
"""

from __future__ import annotations

import contextlib
import select
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg import errors, pq

BEGIN: Final = b"BEGIN ISOLATION LEVEL READ COMMITTED"

# The statements each connection has prepared (names of ours, never psycopg's ``_pg3_*``).
_prepared: weakref.WeakKeyDictionary[pq.abc.PGconn, set[bytes]] = weakref.WeakKeyDictionary()


def integer(value: bytes) -> int:
    """A binary integer column's value (int2, int4 or int8: big-endian, two's complement)."""
    return int.from_bytes(value, "big", signed=True)


def int8(value: bytes | None) -> int | None:
    """:func:`integer`, or None for NULL."""
    return None if value is None else integer(value)


def text_param(value: int | str) -> bytes:
    return str(value).encode()


def array_param(values: Sequence[int | str]) -> bytes:
    """A text-format array parameter: integers as they are, strings quoted and escaped."""
    parts = []
    for v in values:
        if isinstance(v, int):
            parts.append(str(v))
        else:
            parts.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return ("{" + ",".join(parts) + "}").encode()


class Statement:
    """SQL with ``$n`` parameters, prepared on each connection at its first use."""

    __slots__ = ("name", "sql")

    def __init__(self, name: str, sql: str) -> None:
        self.name = f"certex_{name}".encode()
        self.sql = sql.encode()


class Wire:
    """libpq calls on ``raw``'s PGconn (nonblocking, as psycopg leaves it)."""

    __slots__ = ("_poll", "pg")

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.pg = raw.pgconn
        self._poll = select.poll()
        self._poll.register(self.pg.socket, select.POLLIN)

    # -- I/O ---------------------------------------------------------------------------------
    def _wait(self, events: int) -> int:
        self._poll.modify(self.pg.socket, events)
        got = 0
        for _, ready in self._poll.poll():
            got |= ready
        return got

    def _writable(self) -> None:
        """Wait until the socket takes more, reading what the server sends meanwhile (so
        that neither side waits on the other with both buffers full)."""
        if self._wait(select.POLLIN | select.POLLOUT) & select.POLLIN:
            self.pg.consume_input()

    def flush(self) -> None:
        """Send everything libpq has buffered."""
        while self.pg.flush():
            self._writable()

    def result(self) -> pq.abc.PGresult | None:
        while self.pg.is_busy():
            self._wait(select.POLLIN)
            self.pg.consume_input()
        return self.pg.get_result()

    def fail(self, res: pq.abc.PGresult) -> psycopg.Error:
        return errors.error_from_result(res, encoding="utf-8")

    @contextlib.contextmanager
    def _exchange(self) -> Iterator[None]:
        """An exchange with the server that, if it does not run to its end, leaves the
        connection in an unknown state: then it is closed (its owner sees it closed and
        does not pool it again). An error the server reported is not such an end: the
        exchange is read to its end first, and raised after."""
        try:
            yield
        except BaseException:
            _prepared.pop(self.pg, None)
            self.pg.finish()
            raise

    # -- a pipeline of prepared statements ----------------------------------------------------
    def pipeline(
        self, calls: Sequence[tuple[Statement, Sequence[bytes | None]]]
    ) -> list[pq.abc.PGresult]:
        """Run ``calls`` (statement, text parameters) in one round trip, in order, in the
        connection's transaction (begun here if none is open); each one's binary result.

        psycopg deallocates every prepared statement of a session when it rolls back one in
        which it prepared its own (and anyone may ``DISCARD ALL``): a statement of ours the
        server no longer has fails the pipeline. When this pipeline began the transaction,
        nothing has happened in it yet: it is rolled back, the statements the session still
        has are read, and the pipeline runs once more, preparing the others."""
        began = self.pg.transaction_status == pq.TransactionStatus.IDLE
        try:
            return self._pipeline(calls)
        except errors.InvalidSqlStatementName:
            if not began:
                raise
        self.simple(b"ROLLBACK")
        names = self.simple(
            b"SELECT name FROM pg_prepared_statements WHERE starts_with(name, 'certex_')"
        )
        _prepared[self.pg] = {row[0] for row in names if row[0] is not None}
        return self._pipeline(calls)

    def _pipeline(
        self, calls: Sequence[tuple[Statement, Sequence[bytes | None]]]
    ) -> list[pq.abc.PGresult]:
        pg = self.pg
        with self._exchange():
            pg.enter_pipeline_mode()
            sent = self._send(calls)
            pg.pipeline_sync()
            self.flush()
            results, error = self._collect(sent)
            res = self.result()
            if res is None or res.status != pq.ExecStatus.PIPELINE_SYNC:
                raise psycopg.OperationalError("the pipeline did not end with its sync")
            pg.exit_pipeline_mode()
        if error is not None:
            raise self.fail(error)
        return results

    def _send(
        self, calls: Sequence[tuple[Statement, Sequence[bytes | None]]]
    ) -> list[bytes | None]:
        """Queue BEGIN (if no transaction is open), the PREPAREs this connection lacks and
        the calls; what each result will answer: BEGIN (None), a PREPARE (its name), a
        call (b"")."""
        pg = self.pg
        done = _prepared.setdefault(pg, set())
        sent: list[bytes | None] = []
        if pg.transaction_status == pq.TransactionStatus.IDLE:
            pg.send_query_params(BEGIN, None)
            sent.append(None)
        for stmt, _ in calls:
            if stmt.name not in done and stmt.name not in sent:
                pg.send_prepare(stmt.name, stmt.sql, None)
                sent.append(stmt.name)
        for stmt, params in calls:
            pg.send_query_prepared(stmt.name, params, None, 1)
            sent.append(b"")
        return sent

    def _collect(
        self, sent: Sequence[bytes | None]
    ) -> tuple[list[pq.abc.PGresult], pq.abc.PGresult | None]:
        """The calls' results, and the first error of the pipeline (if any)."""
        done = _prepared.setdefault(self.pg, set())
        results: list[pq.abc.PGresult] = []
        error: pq.abc.PGresult | None = None
        for what in sent:
            res = self.result()
            if res is None:  # the server went away: say why, if it said
                raise self.fail(error) if error else psycopg.OperationalError(
                    "the pipeline ended early"
                )
            if res.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                if what == b"":
                    results.append(res)
                elif what is not None:
                    done.add(what)  # prepared, whatever becomes of the transaction
            elif res.status == pq.ExecStatus.FATAL_ERROR:
                error = error or res
            elif res.status != pq.ExecStatus.PIPELINE_ABORTED:
                raise psycopg.OperationalError(f"unexpected result {res.status!r}")
            if self.result() is not None:  # each statement's results end with None
                raise psycopg.OperationalError("more than one result for a statement")
        return results, error

    # -- a simple query that may copy in -----------------------------------------------------
    def script(self, sql: bytes, copies: Sequence[bytes]) -> None:
        """Run ``sql`` (one or more statements, values as literals) in the open
        transaction; its ``COPY … FROM STDIN`` statements take ``copies`` in order."""
        if self.pg.transaction_status != pq.TransactionStatus.INTRANS:
            raise psycopg.ProgrammingError("a ledger script runs only inside a transaction")
        self.simple(sql, copies)

    def simple(self, sql: bytes, copies: Sequence[bytes] = ()) -> list[tuple[bytes | None, ...]]:
        """Run ``sql`` by the simple query protocol; the rows (text) its statements return.
        Each ``COPY … FROM STDIN`` in it takes the next of ``copies`` (one left without
        data fails)."""
        pg = self.pg
        error: pq.abc.PGresult | None = None
        rows: list[tuple[bytes | None, ...]] = []
        pending = list(copies)
        with self._exchange():
            pg.send_query(sql)
            self.flush()
            while (res := self.result()) is not None:
                if res.status == pq.ExecStatus.COPY_IN:
                    data = pending.pop(0) if pending else None
                    if data is not None:
                        while not pg.put_copy_data(data):
                            self._writable()
                    while not pg.put_copy_end(None if data is not None else b"no data"):
                        self._writable()
                    self.flush()
                elif res.status == pq.ExecStatus.TUPLES_OK:
                    rows += [
                        tuple(res.get_value(r, c) for c in range(res.nfields))
                        for r in range(res.ntuples)
                    ]
                elif res.status == pq.ExecStatus.FATAL_ERROR:
                    error = error or res
                elif res.status != pq.ExecStatus.COMMAND_OK:
                    raise psycopg.OperationalError(f"unexpected result {res.status!r}")
        if error is not None:
            raise self.fail(error)
        if pending:
            raise psycopg.ProgrammingError("more copy data than COPY statements")
        return rows

    def literal(self, value: str) -> bytes:
        return pq.Escaping(self.pg).escape_literal(value.encode())
