"""The one code path that writes ledger rows: a group-commit writer.

Two ways in, one chain:

* **Outbox** (events tied to a business transaction): callers record an :class:`Event` in
  their own transaction (an outbox row committed atomically with the change it describes),
  then wait on :meth:`LedgerWriter.wait`.
* **Direct** (events that are not part of a business transaction): callers hand events to
  :meth:`LedgerWriter.append` (blocking, thread-safe) or :meth:`LedgerWriter.append_async`
  (awaitable); they go straight to the writer thread's in-memory queue.

The writer thread takes every waiting caller — once the direct callers the last batch
answered are back, or ``gather_wait`` (1 ms) after that answer, whichever comes first — and
under the database lock (``pg_advisory_xact_lock`` / ``BEGIN IMMEDIATE``) appends one batch
(:mod:`.append`) — every committed outbox row in outbox order, then the direct events in
submission order: leaves, hash chain, new subtree hashes, head, and a checkpoint signed only
after checking that the stored tree it builds on still hashes to the last checkpoint signed;
then commits, and only then answers the callers. A batch that does not commit answers
nobody with an index. Several processes over one database still produce one linear chain:
each batch starts from the head it reads under the lock. Outbox rows left by a process that
died are appended by whichever writer runs next; direct events live only in this process's
memory until their batch commits (a caller that was not answered with an index must assume
its events were not logged, or — on a timeout — may not yet be).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from exchange.errors import LedgerIntegrityError, LedgerUnavailable
from exchange.ledger import store
from exchange.ledger.append import BatchAppender
from exchange.ledger.callers import Deadlines, Direct, answer
from exchange.ledger.leaf import Event
from exchange.ledger.leaves import Ref, check_direct
from exchange.ledger.note import Signer
from exchange.node import Node
from exchange.persistence.models import LedgerOutbox

log = logging.getLogger("certex.ledger")

RECHECK_AFTER = 0.25  # seconds a caller waits on the writer before looking in the ledger
# Seconds a batch may wait, after the last one answered its direct callers, for those callers
# to come back (see LedgerWriter._loop): the most latency it adds to an append.
GATHER_WAIT = 0.001
_STOP = "__stop__"


def origin_of(node: Node) -> str:
    """The ledger's checkpoint origin (and note key name): ``{node host}/ledger``."""
    return f"{node.host}/ledger"


def ledger_signer(node: Node) -> Signer:
    with node.reads() as session:
        key = node.keys.current(session, "node:ledger")
    return Signer(origin_of(node), key.private_key)


class LedgerWriter:
    """A background thread that group-commits ledger entries for this process."""

    def __init__(
        self,
        node: Node,
        *,
        max_batch: int = 4096,
        wait_timeout: float = 15.0,
        gather_wait: float = GATHER_WAIT,
    ) -> None:
        self._node = node
        self._max_batch = max_batch
        self._timeout = wait_timeout
        self._gather_wait = gather_wait
        # After a batch: until when, and for how many callers in all, the next one may wait
        # (those queued when it answered, and the direct callers it answered).
        self._recall = (0.0, 0)
        # Outbox waiters (ref, future), direct callers (a list: one blocking caller, or an
        # event loop's callers of one step) and the stop word.
        self._queue: queue.SimpleQueue[tuple[str, Future[int]] | list[Direct] | str] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._halted: str | None = None
        self._appender: BatchAppender | None = None
        # Direct events get a ref only to be told their indices by (it is not stored): a
        # number (an int, never equal to an outbox event's ref, a UUID string).
        self._ref_count = 0
        self._deadlines: dict[asyncio.AbstractEventLoop, Deadlines] = {}
        # Each event loop's asyncio callers not yet handed to the writer thread: handed over
        # together once the loop has run every task that was ready (see append_async).
        self._outgoing: dict[asyncio.AbstractEventLoop, list[Direct]] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._appender = BatchAppender(
            self._node, ledger_signer(self._node), max_batch=self._max_batch
        )
        self._appender.run([], [])  # genesis checkpoint and any orphaned outbox rows
        self._thread = threading.Thread(target=self._loop, name="ledger-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
            self._thread = None

    @property
    def halted(self) -> str | None:
        """Why the writer refused to go on, or None."""
        return self._halted

    # -- callers ----------------------------------------------------------------------------
    def _enqueue(self, refs: Sequence[str]) -> list[Future[int]]:
        """Hand the outbox refs to the writer thread; one future per ref."""
        if self._halted:
            raise LedgerUnavailable(f"the ledger writer has stopped: {self._halted}")
        if self._thread is None:
            raise LedgerUnavailable("the ledger writer is not running")
        futures: list[Future[int]] = []
        for ref in refs:
            f: Future[int] = Future()
            self._queue.put((ref, f))
            futures.append(f)
        return futures

    def wait(self, refs: Sequence[str]) -> list[int]:
        """Block until the outbox events ``refs`` are committed; their ledger indices."""
        if not refs:
            return []
        futures = self._enqueue(refs)
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                step = max(0.0, min(RECHECK_AFTER, deadline - time.monotonic()))
                return [f.result(timeout=step) for f in futures]
            except FutureTimeout:
                pass
            # Every writer appends every committed event, so another process's writer may
            # have appended these while this one still waits for the database lock (SQLite's
            # busy handler lets newcomers overtake a long waiter for seconds).
            found = self._appended(refs)
            if all(r in found for r in refs):
                return [found[r] for r in refs]
            if time.monotonic() >= deadline:
                raise LedgerUnavailable("the ledger did not commit in time")

    async def wait_async(self, refs: Sequence[str]) -> list[int]:
        """:meth:`wait` for asyncio callers: no thread is held while the batch commits."""
        if not refs:
            return []
        futures = self._enqueue(refs)
        together = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        # Never cancelled (that would cancel the writer's futures under it); an answer that
        # comes after this caller stopped waiting is read here and dropped.
        together.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        deadline = time.monotonic() + self._timeout
        while True:
            step = max(0.0, min(RECHECK_AFTER, deadline - time.monotonic()))
            try:
                return list(await asyncio.wait_for(asyncio.shield(together), step))
            except TimeoutError:
                pass
            # As in ``wait``: another process's writer may have appended them already.
            found = await asyncio.to_thread(self._appended, refs)
            if all(r in found for r in refs):
                return [found[r] for r in refs]
            if time.monotonic() >= deadline:
                raise LedgerUnavailable("the ledger did not commit in time")

    def append(self, events: Sequence[Event]) -> list[int]:
        """Append ``events`` — not tied to any business transaction — in the writer's next
        batch, after the outbox rows it holds; block until that batch has committed and
        return the events' indices, in order (consecutive). Thread-safe.

        LedgerUnavailable when the batch failed (nothing of it was committed), the writer
        halted or stopped, or no batch committed within the wait timeout (then the events
        were either dropped before the writer took them or may still be appended).
        InvalidInput, before anything is queued, for an event that cannot be a leaf.
        """
        batch = self._direct_request(events)
        if not batch:
            return []
        f: Future[list[int]] = Future()
        self._queue.put([Direct(batch, future=f)])
        try:
            return f.result(timeout=self._timeout)
        except FutureTimeout:
            if f.cancel():  # the writer had not taken them: they will not be appended
                raise LedgerUnavailable("the ledger did not commit in time") from None
            raise LedgerUnavailable(
                "the ledger did not commit in time (the events may still be appended)"
            ) from None

    async def append_async(self, events: Sequence[Event]) -> list[int]:
        """:meth:`append` for asyncio callers: awaits the batch without blocking the loop.

        The callers of one loop are handed to the writer thread together, once the loop
        has run every task that was ready when the first of them called (a loop answered by
        a batch calls again all at once): one hand-off, and one wake-up of the writer
        thread, instead of one for each caller. The writer thread answers through
        ``loop.call_soon_threadsafe``, once per loop per batch. Cancelling the awaiting task
        drops the events if the writer has not taken them yet; otherwise they are appended
        and the answer is discarded. The wait timeout is kept by one timer per loop for all
        its callers (so it ends up to a quarter of a second late, or a quarter of the
        timeout if that is shorter).
        """
        batch = self._direct_request(events)
        if not batch:
            return []
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[int]] = loop.create_future()
        outgoing = self._outgoing.get(loop)
        if outgoing is None:
            outgoing = self._outgoing[loop] = []
            loop.call_soon(self._hand_over, loop)
        outgoing.append(Direct(batch, waiter=waiter, loop=loop))
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            deadlines = self._deadlines.setdefault(
                loop, Deadlines(loop, self._timeout, self._forget_loop)
            )
        deadlines.add(waiter)
        return await waiter

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: its callers since the last hand-off go to the writer thread."""
        self._queue.put(self._outgoing.pop(loop))

    def _forget_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._deadlines.pop(loop, None)

    def _direct_request(self, events: Sequence[Event]) -> list[Event]:
        batch = list(events)
        for event in batch:
            check_direct(event)
        if batch:
            if self._halted:
                raise LedgerUnavailable(f"the ledger writer has stopped: {self._halted}")
            if self._thread is None:
                raise LedgerUnavailable("the ledger writer is not running")
        return batch

    def _appended(self, refs: Sequence[str]) -> dict[str, int]:
        """The indices of those of ``refs`` already in the ledger (committed, so signed)."""
        try:
            with self._node.engine.connect() as conn:
                conn.execution_options(sqlite_begin="BEGIN")  # a WAL read takes no lock
                return store.indices_of_refs(conn, refs)
        except SQLAlchemyError:
            return {}  # the database is down: keep waiting for the writer until the deadline

    # -- the writer thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            waiters: list[tuple[str, Future[int]]] = []
            direct: list[Direct] = []
            stop, taken = False, 0
            deadline, expected = self._recall
            while True:
                if isinstance(item, list):
                    direct += item
                    taken += sum(len(d.events) for d in item)
                elif isinstance(item, tuple):
                    waiters.append(item)
                    taken += 1
                else:
                    stop = True
                if taken >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    # The direct callers the last batch answered often come straight back
                    # (a task or thread appending in a loop): give them until the deadline,
                    # so that one batch and one commit carry them and those who queued
                    # meanwhile, not two half batches.
                    wait = deadline - time.monotonic()
                    if stop or wait <= 0 or len(waiters) + len(direct) >= expected:
                        break
                    try:
                        item = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
            self._serve(waiters, direct)
            if stop:
                self._refuse_queued()
                return

    def _refuse_queued(self) -> None:
        """Refuse the direct callers still queued when the writer stops. (Outbox waiters
        are left to ``wait``, which looks for their committed events in the ledger.)"""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, list):
                answer([d for d in item if d.take()], {}, "the ledger writer has stopped")

    def _next_refs(self, n: int) -> range:
        first, self._ref_count = self._ref_count, self._ref_count + n
        return range(first, first + n)

    def _serve(self, waiters: list[tuple[str, Future[int]]], direct: list[Direct]) -> None:
        direct = [d for d in direct if d.take()]
        if self._halted:
            reason = f"the ledger writer has stopped: {self._halted}"
            for _, f in waiters:
                f.set_exception(LedgerUnavailable(reason))
            answer(direct, {}, reason)
            return
        pending: list[tuple[Ref, Event]] = []
        for d in direct:
            d.refs = self._next_refs(len(d.events))
            pending.extend(zip(d.refs, d.events, strict=True))
        committed: dict[Ref, int] = {}  # filled only as transactions commit
        error = ""
        try:
            assert self._appender is not None  # set by start(), before the thread runs
            self._appender.run([ref for ref, _ in waiters], pending, committed)
        except LedgerIntegrityError as e:
            self._halted = e.detail
            log.critical("LEDGER INTEGRITY ALARM: %s — refusing to append or sign", e.detail)
            error = f"ledger integrity failure: {e.detail}"
        except Exception as e:  # database down, lock timeout: fail these callers, keep going
            log.exception("ledger batch failed")
            error = f"the ledger could not commit: {e}"
        # Counted before anyone is answered: an answered caller may be back at once. Only
        # direct callers count: an outbox caller's next event needs a transaction of its
        # own to commit first, so it cannot be back within the wait. (A loop's hand-off
        # still queued counts as one item, however many callers it holds: the wait may then
        # end before everyone is back, never later.)
        self._recall = (time.monotonic() + self._gather_wait, self._queue.qsize() + len(direct))
        # Each caller is answered from what committed: an index only for a committed entry.
        for ref, f in waiters:
            idx = committed.get(ref)
            if idx is not None:
                f.set_result(idx)
            else:
                f.set_exception(
                    LedgerUnavailable(error or f"event {ref} is not in the outbox or ledger")
                )
        answer(direct, committed, error or "the events were not appended")


_OUTBOX_INSERT = insert(LedgerOutbox)  # built once; its values are bound per call


def record(session: Session, event: Event, *, ref: str, now_ms: int) -> str:
    """Add ``event`` to the outbox in the caller's transaction; wait on ``ref`` after commit."""
    # A Core INSERT, not session.add: the unit of work's flush machinery costs more than
    # the statement (this runs in every issuance, status change, consent and pull).
    session.connection().execute(
        _OUTBOX_INSERT, {"ref": ref, "event": event.to_json(), "created_ms": now_ms})
    pending: list[str] = session.info.setdefault("ledger_refs", [])
    pending.append(ref)
    return ref


def pending_refs(session: Session) -> Iterable[str]:
    return tuple(session.info.get("ledger_refs", ()))
