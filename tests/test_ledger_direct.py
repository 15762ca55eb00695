"""The writer's direct path: events that are not part of a business transaction.

``append_events`` / ``LedgerWriter.append_async`` hand events straight to the writer thread,
which appends them in its next batch after the outbox rows it holds, under the same lock,
on the same chain, under the same signed checkpoints — and answers only after commit.
Afterwards the whole ledger is re-derived from its leaf bytes (tests/ledger_load.py
``audit``) and every answered index is proven into the final signed checkpoint.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import IntegrityError

from exchange.errors import InvalidInput, LedgerUnavailable
from exchange.ledger import leaves
from exchange.ledger.leaf import Event, decode_leaf, encode_leaf
from exchange.ledger.service import (
    append_events,
    append_events_async,
    commit_wait,
    log_event,
    subject_pseudonym,
    verifier_key,
)
from exchange.ledger.writer import LedgerWriter, pending_refs
from exchange.node import Node
from exchange.persistence.db import make_engine
from exchange.persistence.models import LedgerCheckpoint, LedgerEntry, LedgerHead, LedgerOutbox
from tests import ledger_load as load


def _event(node: Node, tag: str, t: int, i: int, subjects: int = 5) -> Event:
    return Event(
        kind="pull",
        actor="direct",
        outcome="granted",
        subject=subject_pseudonym(node, f"direct-subject-{(t + i) % subjects}"),
        request_sha256=load.request_sha(tag, t, i),
    )


def _checkpoints(node: Node) -> list[int]:
    with node.engine.connect() as conn:
        return list(conn.scalars(select(LedgerCheckpoint.size).order_by(LedgerCheckpoint.size)))


def _entries(node: Node) -> int:
    with node.engine.connect() as conn:
        return len(conn.scalars(select(LedgerEntry.idx)).all())


# -- one linear chain ------------------------------------------------------------------------


@pytest.mark.slow  # 4000 appends, then every proof checked
def test_threads_append_directly_one_linear_chain(node: Node, database_url: str) -> None:
    threads, per_thread = 8, 500
    node.start_ledger()

    def run(t: int) -> dict[str, int]:
        told: dict[str, int] = {}
        for i in range(per_thread):
            event = _event(node, "direct", t, i)
            [told[event.request_sha256 or ""]] = append_events(node, [event])
        return told

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(run, range(threads)))
    answered = {sha: i for told in results for sha, i in told.items()}
    for told in results:  # each caller's appends are in the order it made them
        assert list(told.values()) == sorted(told.values())

    total = threads * per_thread
    ledger = load.audit(database_url, verifier_key(node))
    assert ledger.size == total and ledger.checkpoint.size == total
    assert sorted(answered.values()) == list(range(total))  # every index told exactly once
    load.assert_included(database_url, ledger, answered)
    assert ledger.checkpoints - 1 < total, "no group commit: one batch per append"


@pytest.mark.slow
def test_direct_and_outbox_appends_share_one_chain(node: Node, database_url: str) -> None:
    per_thread = 150
    node.start_ledger()

    def direct(t: int) -> dict[str, int]:
        told: dict[str, int] = {}
        for i in range(0, per_thread, 3):  # three events per call: consecutive indices
            events = [_event(node, "mixed-d", t, i + k) for k in range(3)]
            indices = append_events(node, events)
            assert indices == list(range(indices[0], indices[0] + 3))
            told.update(zip((e.request_sha256 or "" for e in events), indices, strict=True))
        return told

    def outbox(t: int) -> dict[str, int]:
        told: dict[str, int] = {}
        for i in range(per_thread):
            event = _event(node, "mixed-o", t, i)
            with node.sessions.begin() as session:
                log_event(session, node, event)
            [told[event.request_sha256 or ""]] = commit_wait(node, session)
        return told

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(direct if t % 2 else outbox, t) for t in range(8)]
        results = [f.result() for f in futures]
    answered = {sha: i for told in results for sha, i in told.items()}

    total = 8 * per_thread
    ledger = load.audit(database_url, verifier_key(node))
    assert ledger.size == total and ledger.outbox == 0
    assert sorted(answered.values()) == list(range(total))
    load.assert_included(database_url, ledger, answered)


def test_outbox_rows_come_first_then_direct_events_in_submission_order(node: Node) -> None:
    node.start_ledger()
    sessions = []
    for i in range(3):  # committed, not waited on: they sit in the outbox
        with node.sessions.begin() as session:
            log_event(session, node, _event(node, "first-o", 0, i))
        sessions.append(session)
    direct = [_event(node, "first-d", 0, i) for i in range(2)]
    assert append_events(node, direct) == [3, 4]  # the same batch appended the outbox first
    assert [commit_wait(node, s) for s in sessions] == [[0], [1], [2]]
    assert _checkpoints(node) == [0, 5]  # one batch, one checkpoint
    with node.engine.connect() as conn:
        leaves = conn.scalars(select(LedgerEntry.leaf).order_by(LedgerEntry.idx)).all()
        assert conn.scalars(select(LedgerOutbox.ref)).all() == []
    shas = [decode_leaf(bytes(leaf)).fields["request_sha256"] for leaf in leaves]
    assert shas[3:] == [e.request_sha256 for e in direct]


def _ref_lookup_plan(conn: Connection, dialect: str) -> str:
    """The plan of the statement a waiter looks for its refs with, as text."""
    lookup = select(LedgerEntry.ref, LedgerEntry.idx).where(LedgerEntry.ref.in_(["a", "b"]))
    sql = str(lookup.compile(conn, compile_kwargs={"literal_binds": True}))
    if dialect == "postgresql":
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # a few rows are one scan
        return "\n".join(conn.scalars(text("EXPLAIN " + sql)))
    return "\n".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))


def test_only_outbox_entries_store_their_ref(node: Node) -> None:
    """A direct event's row stores no ref (its caller is answered from memory), so it costs
    no entry in the unique index; an outbox entry keeps its ref, which stays unique and is
    found through that index."""
    node.start_ledger()
    sessions = []
    for i in range(3):
        with node.sessions.begin() as session:
            log_event(session, node, _event(node, "refs-o", 0, i))
        sessions.append(session)
    assert append_events(node, [_event(node, "refs-d", 0, i) for i in range(2)]) == [3, 4]
    outbox_refs = [ref for s in sessions for ref in pending_refs(s)]
    assert [commit_wait(node, s) for s in sessions] == [[0], [1], [2]]
    assert append_events(node, [_event(node, "refs-d", 1, 0)]) == [5]
    with node.engine.connect() as conn:
        refs = conn.scalars(select(LedgerEntry.ref).order_by(LedgerEntry.idx)).all()
        assert refs == [*outbox_refs, None, None, None]
        assert "ledger_entries_ref_key" in _ref_lookup_plan(conn, node.engine.dialect.name)
    # The index still refuses a second row with an outbox entry's ref.
    with pytest.raises(IntegrityError), node.engine.begin() as conn:
        conn.execute(
            insert(LedgerEntry),
            {"idx": 99, "leaf": b"x", "leaf_hash": b"\0" * 32, "ref": outbox_refs[0],
             "kind": "pull", "actor": "dup", "subject": None, "time_ms": 0},
        )
    assert _entries(node) == 6


def test_asyncio_callers_each_await_their_index(node: Node, database_url: str) -> None:
    tasks, per_task = 200, 5
    node.start_ledger()

    async def caller(t: int) -> dict[str, int]:
        told: dict[str, int] = {}
        for i in range(per_task):
            event = _event(node, "async", t, i, subjects=17)
            [told[event.request_sha256 or ""]] = await append_events_async(node, [event])
        return told

    async def main() -> list[dict[str, int]]:
        return await asyncio.gather(*(caller(t) for t in range(tasks)))

    results = asyncio.run(main())
    answered = {sha: i for told in results for sha, i in told.items()}
    total = tasks * per_task
    ledger = load.audit(database_url, verifier_key(node))
    assert ledger.size == total and sorted(answered.values()) == list(range(total))
    load.assert_included(database_url, ledger, answered)
    # 200 concurrent callers: far fewer batches than appends.
    assert ledger.checkpoints - 1 <= total // 10


def _batch_sizes(node: Node) -> list[int]:
    sizes = _checkpoints(node)
    return [b - a for a, b in pairwise(sizes)]


def test_callers_who_come_straight_back_share_one_batch(node: Node, database_url: str) -> None:
    """A batch waits (up to ``gather_wait``) for the callers the last batch answered, so a
    closed loop of callers is not split into two half batches, each paying for a commit.
    Cohort A's first appends wait in one batch for the lock while cohort B queues; after
    that each batch carries B and A's callers, just answered, together."""
    tasks, per_task = 20, 5
    node.ledger = LedgerWriter(node, gather_wait=1.0)
    node.ledger.start()
    first = _checkpoints(node)[-1]

    async def caller(t: int) -> list[int]:
        return [(await append_events_async(node, [_event(node, "gather", t, i)]))[0]
                for i in range(per_task)]

    async def main() -> list[list[int]]:
        with _ledger_locked(database_url):
            a = [asyncio.create_task(caller(t)) for t in range(tasks)]
            await asyncio.sleep(0.3)  # the writer holds cohort A, waiting for the lock
            b = [asyncio.create_task(caller(t)) for t in range(tasks, 2 * tasks)]
            await asyncio.sleep(0.3)  # cohort B queues behind it
        return await asyncio.gather(*a, *b)

    started = time.monotonic()
    answered = asyncio.run(main())
    # 0.6 s of sleeps, and only the last batch waits out its deadline (A has finished).
    assert time.monotonic() - started < 0.6 + 2.0
    ledger = load.audit(database_url, verifier_key(node))
    assert sorted(i for told in answered for i in told) == list(range(first, ledger.size))
    # Without the wait: A, B, A, B, … ten batches of 20.
    assert _batch_sizes(node) == [tasks] + [2 * tasks] * (per_task - 1) + [tasks]


class _CountedQueue:
    """The writer's queue, counting the callers in each item put on it."""

    def __init__(self, real: Any) -> None:
        self.real, self.items = real, []

    def put(self, item: Any) -> None:
        self.items.append(len(item) if isinstance(item, list) else 1)
        self.real.put(item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_one_loops_callers_reach_the_writer_in_one_hand_off(
    node: Node, database_url: str
) -> None:
    """Callers that a loop runs in the same step are handed to the writer thread together:
    one item on its queue and one wake-up, not one for each caller (each wake-up of the
    writer thread took the GIL from the loop in the middle of the callers' burst)."""
    node.start_ledger()
    counted = _CountedQueue(node.ledger._queue)
    node.ledger._queue = counted  # type: ignore[assignment]

    events = [_event(node, "hand-off", t, 0) for t in range(50)]

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(append_events_async(node, [e]) for e in events))

    told = asyncio.run(main())
    answered = {e.request_sha256 or "": i for e, [i] in zip(events, told, strict=True)}
    assert counted.items == [50]
    first = min(answered.values())
    assert sorted(answered.values()) == list(range(first, first + 50))
    ledger = load.audit(database_url, verifier_key(node))
    load.assert_included(database_url, ledger, answered)


def test_callers_on_loops_in_two_threads_each_get_their_own_index(
    node: Node, database_url: str
) -> None:
    """Each loop hands over its own callers (two loops in two threads at once, several
    steps each): every caller is answered with its own index, all proven included."""
    node.start_ledger()

    def on_a_loop(tag: str) -> dict[str, int]:
        async def caller(t: int) -> dict[str, int]:
            told: dict[str, int] = {}
            for i in range(3):
                event = _event(node, tag, t, i, subjects=7)
                [told[event.request_sha256 or ""]] = await append_events_async(node, [event])
            return told

        async def main() -> list[dict[str, int]]:
            return await asyncio.gather(*(caller(t) for t in range(40)))

        return {sha: i for told in asyncio.run(main()) for sha, i in told.items()}

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(on_a_loop, ["loop-a", "loop-b"])
    answered = {**a, **b}
    assert len(a) == len(b) == 120 and len(answered) == 240
    assert len(set(answered.values())) == 240
    ledger = load.audit(database_url, verifier_key(node))
    load.assert_included(database_url, ledger, answered)


def test_the_wait_for_callers_is_bounded_and_only_after_an_answer(node: Node) -> None:
    """A caller that does not come back costs the next batch at most ``gather_wait``; an
    append that comes after that deadline is not held at all."""
    node.ledger = LedgerWriter(node, gather_wait=0.4)
    node.ledger.start()

    async def once(t: int) -> None:
        await append_events_async(node, [_event(node, "bounded", t, 0)])

    async def again(t: int, pause: float) -> float:
        await append_events_async(node, [_event(node, "bounded", t, 0)])
        await asyncio.sleep(pause)
        started = time.monotonic()
        await append_events_async(node, [_event(node, "bounded", t, 1)])  # alone
        return time.monotonic() - started

    async def main(pause: float) -> float:
        # Both first appends are queued in one step of the loop, before the writer thread
        # gets the GIL back: one batch answers two callers, of whom one comes back.
        _, held = await asyncio.gather(once(int(pause * 100)), again(int(pause * 100) + 1, pause))
        return held

    held = asyncio.run(main(0.0))  # back at once: held until the deadline, for the other
    assert _batch_sizes(node)[-2:] == [2, 1]
    assert 0.3 <= held < 1.5
    late = asyncio.run(main(0.45))  # back after the deadline: not held
    assert _batch_sizes(node)[-2:] == [2, 1]
    assert late < 0.3


def test_outbox_callers_are_not_waited_for(node: Node) -> None:
    """An outbox caller's next event needs its own transaction to commit first, so a batch
    never waits for the outbox callers the last one answered: a lone event after a batch
    that answered eight is appended at once, whatever ``gather_wait`` is."""
    node.ledger = LedgerWriter(node, gather_wait=2.0)
    node.ledger.start()
    with node.sessions.begin() as session:  # eight waiters, queued at once
        for i in range(8):
            log_event(session, node, _event(node, "outbox-nowait", 0, i))
    assert commit_wait(node, session) == list(range(8))
    started = time.monotonic()
    with node.sessions.begin() as session:
        log_event(session, node, _event(node, "outbox-nowait", 1, 0))
    assert commit_wait(node, session) == [8]
    assert time.monotonic() - started < 1.0


def test_leaf_bytes_are_exactly_encode_leafs() -> None:
    class Actor(str):
        pass

    events = [
        Event(kind="pull", actor="银行-1", outcome="granted", subject="a" * 64, reason="理由"),
        Event(kind="consent.revoked", actor="x", outcome="ok", consent="c-1", item="002018001000"),
        Event(kind="pull", actor=Actor("subclass"), outcome="denied"),  # the slow path
    ]
    for prev_subject in (None, 0, 12345678901):
        for event in events:
            args = {
                "index": 12345678902,
                "time_ms": 1_700_000_000_123,
                "node": "31",
                "prev": bytes(range(32)),
                "prev_subject": prev_subject,
            }
            assert leaves._leaf(event, **args) == encode_leaf(event, **args)  # type: ignore[arg-type]


# -- failures: nobody is told an index that was not committed ---------------------------------


def test_bad_events_are_refused_before_anything_is_queued(node: Node) -> None:
    node.start_ledger()
    with pytest.raises(InvalidInput):
        append_events(node, [Event(kind="pull", actor=7, outcome="ok")])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        append_events(node, [Event(kind="pull", actor="\ud800", outcome="ok")])

    class Str(str):
        pass

    with pytest.raises(InvalidInput):  # a str subclass is not a plain str
        append_events(node, [Event(kind="pull", actor=Str("bank"), outcome="ok")])
    assert append_events(node, []) == []
    assert _entries(node) == 0
    # Not ASCII but encodable: accepted (and its batch is built by the Python loop).
    assert append_events(node, [Event(kind="pull", actor="银行 \"a\"", outcome="ok")]) == [0]
    with node.engine.connect() as conn:
        leaf = conn.execute(select(LedgerEntry.leaf)).scalar_one()
    assert decode_leaf(leaf).actor == '银行 "a"'


def test_no_writer_means_ledger_unavailable(node: Node) -> None:
    with pytest.raises(LedgerUnavailable, match="no ledger writer"):
        append_events(node, [_event(node, "none", 0, 0)])
    w = node.start_ledger()
    w.stop()
    with pytest.raises(LedgerUnavailable, match="not running"):
        append_events(node, [_event(node, "none", 0, 1)])


@contextmanager
def _ledger_refused(database_url: str) -> Iterator[None]:
    """The database rejects every insert into ledger_entries until the block ends."""
    engine = make_engine(database_url, pool_size=1)
    pg = engine.dialect.name == "postgresql"
    try:
        with engine.begin() as conn:
            if pg:
                conn.execute(
                    text(
                        "CREATE FUNCTION certex_test_refuse() RETURNS trigger LANGUAGE plpgsql"
                        " AS $$ BEGIN RAISE EXCEPTION 'ledger storage refuses writes'; END $$"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER certex_test_refuse BEFORE INSERT ON ledger_entries"
                        " FOR EACH ROW EXECUTE FUNCTION certex_test_refuse()"
                    )
                )
            else:
                conn.execute(
                    text(
                        "CREATE TRIGGER certex_test_refuse BEFORE INSERT ON ledger_entries"
                        " BEGIN SELECT RAISE(ABORT, 'ledger storage refuses writes'); END"
                    )
                )
        yield
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER certex_test_refuse" + (" ON ledger_entries" if pg else "")))
            if pg:
                conn.execute(text("DROP FUNCTION certex_test_refuse()"))
    finally:
        engine.dispose()


def test_a_failed_batch_answers_nobody_with_an_index(node: Node, database_url: str) -> None:
    w = node.start_ledger()
    assert append_events(node, [_event(node, "fail", 0, 0)]) == [0]
    signed = _checkpoints(node)
    callers = 12
    outcomes: list[object] = [None] * callers
    gate = threading.Barrier(callers)

    def call(t: int) -> None:
        gate.wait()
        try:
            outcomes[t] = append_events(node, [_event(node, "fail", t, 1), _event(node, "fail", t, 2)])
        except LedgerUnavailable as e:
            outcomes[t] = e

    with _ledger_refused(database_url):
        threads = [threading.Thread(target=call, args=(t,)) for t in range(callers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert all(isinstance(o, LedgerUnavailable) for o in outcomes), outcomes
        assert all("could not commit" in str(o) for o in outcomes)
        with pytest.raises(LedgerUnavailable, match="could not commit"):
            asyncio.run(append_events_async(node, [_event(node, "fail", 99, 0)]))
        assert _checkpoints(node) == signed and _entries(node) == 1
    # Only a failed batch: the writer goes on, and the chain has no gap.
    assert w.halted is None
    assert append_events(node, [_event(node, "fail", 0, 3)]) == [1]
    ledger = load.audit(database_url, verifier_key(node))
    assert ledger.size == 2


def test_integrity_halt_refuses_direct_callers(node: Node, database_url: str) -> None:
    w = node.start_ledger()
    assert append_events(node, [_event(node, "halt", 0, i) for i in range(3)]) == [0, 1, 2]
    with node.engine.begin() as conn:  # storage no longer matches what was signed
        conn.execute(text("UPDATE ledger_head SET last_hash = :h"), {"h": b"\x01" * 32})
    with node.engine.connect() as conn:
        head = conn.execute(select(LedgerHead.size, LedgerHead.last_hash)).one()
    signed = _checkpoints(node)
    with pytest.raises(LedgerUnavailable, match="integrity"):
        append_events(node, [_event(node, "halt", 0, 3)])
    assert w.halted
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match="stopped"):
        append_events(node, [_event(node, "halt", 0, 4)])
    with pytest.raises(LedgerUnavailable, match="stopped"):
        asyncio.run(append_events_async(node, [_event(node, "halt", 0, 5)]))
    assert time.monotonic() - started < 1  # refused at once, not after a timeout
    assert _checkpoints(node) == signed
    with node.engine.connect() as conn:
        assert conn.execute(select(LedgerHead.size, LedgerHead.last_hash)).one() == head


@contextmanager
def _ledger_locked(database_url: str) -> Iterator[None]:
    """Another connection holds the lock the writer needs until the block ends."""
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


def test_a_wait_timeout_is_unavailable_and_the_writer_goes_on(
    node: Node, database_url: str
) -> None:
    node.ledger = LedgerWriter(node, wait_timeout=1.0)
    node.ledger.start()
    assert append_events(node, [_event(node, "late", 0, 0)]) == [0]
    with _ledger_locked(database_url):
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable, match="did not commit in time"):
            append_events(node, [_event(node, "late", 0, 1)])
        with pytest.raises(LedgerUnavailable, match="did not commit in time"):
            asyncio.run(append_events_async(node, [_event(node, "late", 0, 2)]))
        assert time.monotonic() - started < 5
    # Not answered is not "not appended": the writer had taken the first one into the
    # batch that was waiting for the lock, and appends it once the lock is free.
    later = append_events(node, [_event(node, "late", 0, 3)])
    ledger = load.audit(database_url, verifier_key(node))
    assert later == [ledger.size - 1]
    assert node.ledger.halted is None


def test_outbox_events_awaited_on_an_event_loop(node: Node, database_url: str) -> None:
    """``wait_async`` (what the async write routes use): 100 concurrent transactions, each
    awaiting its outbox events without a thread; every index included; refused without a
    running writer."""
    from exchange.ledger.service import take_refs

    writer = node.start_ledger()
    told: dict[str, int] = {}

    def commit_one(t: int) -> tuple[str, list[str]]:
        event = _event(node, "outbox-async", t, 0, subjects=7)
        with node.sessions.begin() as session:
            log_event(session, node, event)
        return event.request_sha256 or "", take_refs(session)

    async def one(t: int) -> None:
        sha, refs = await asyncio.to_thread(commit_one, t)
        [told[sha]] = await writer.wait_async(refs)

    async def main() -> None:
        await asyncio.gather(*(one(t) for t in range(100)))

    asyncio.run(main())
    ledger = load.audit(database_url, verifier_key(node))
    assert sorted(told.values()) == list(range(ledger.size - 100, ledger.size))
    load.assert_included(database_url, ledger, told)
    assert asyncio.run(writer.wait_async([])) == []
    writer.stop()
    with pytest.raises(LedgerUnavailable, match="not running"):
        asyncio.run(writer.wait_async(["no-such-ref"]))


def test_one_timer_a_loop_expires_only_the_late_and_forgets_the_loop() -> None:
    """The asyncio callers' wait timeout: answered callers are never expired, unanswered
    ones are, within ``every`` of their deadline; once nobody waits, the loop is forgotten
    (a writer serving many short-lived loops keeps none of them)."""
    from exchange.ledger.callers import Deadlines

    forgotten: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        d = Deadlines(loop, 0.2, forgotten.append)
        answered = [loop.create_future() for _ in range(3)]
        late = [loop.create_future() for _ in range(2)]
        started = time.monotonic()
        for w in (answered[0], late[0], answered[1], late[1], answered[2]):
            d.add(w)
        await asyncio.sleep(0.05)
        for w in answered:
            w.set_result([1])
        with pytest.raises(LedgerUnavailable, match="did not commit in time"):
            await late[1]
        waited = time.monotonic() - started
        assert 0.2 <= waited < 0.2 + d.every + 0.2
        assert late[0].done() and isinstance(late[0].exception(), LedgerUnavailable)
        assert all(w.result() == [1] for w in answered)
        while d.scheduled:
            await asyncio.sleep(d.every)
        assert forgotten == [loop] and not d.pending

    asyncio.run(main())
