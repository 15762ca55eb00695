"""The one code path that writes ledger rows: a group-commit writer.

Callers record an :class:`Event` in their own transaction (an outbox row committed atomically
with the change it describes), then wait on :meth:`LedgerWriter.wait`. The writer thread takes
every waiting event, and under the database lock (``pg_advisory_xact_lock`` /
``BEGIN IMMEDIATE``) appends them as one batch: leaves, hash chain, new subtree hashes, head,
and a checkpoint signed only after proving the new tree consistent with the last one it
signed; then commits, and only then answers the waiters. Several processes over one database
still produce one linear chain: each batch starts from the head it reads under the lock.
Outbox rows left by a process that died are appended by whichever writer runs next.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from exchange.errors import LedgerIntegrityError, LedgerUnavailable, VerificationFailed
from exchange.ledger import merkle, store
from exchange.ledger.checkpoint import Checkpoint, sign_checkpoint
from exchange.ledger.leaf import Event, encode_leaf
from exchange.ledger.note import Signer
from exchange.node import Node
from exchange.persistence.models import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerHead,
    LedgerNode,
    LedgerOutbox,
)

log = logging.getLogger("certex.ledger")

LOCK_KEY = 0x63657274_6C656467  # "certledg": the advisory lock every writer process takes
RECHECK_AFTER = 0.25  # seconds a caller waits on the writer before looking in the ledger
_STOP = "__stop__"


@dataclass
class _Frontier:
    """The perfect subtrees of the binary decomposition of the tree, largest first."""

    nodes: list[tuple[int, int, bytes]]  # (level, index at that level, hash)

    def append(self, index: int, leaf_hash: bytes, new_nodes: list[dict[str, object]]) -> None:
        self.nodes.append((0, index, leaf_hash))
        while len(self.nodes) > 1 and self.nodes[-1][0] == self.nodes[-2][0]:
            lvl, _, right = self.nodes.pop()
            _, left_idx, left = self.nodes.pop()
            parent = (lvl + 1, left_idx >> 1, merkle.node_hash(left, right))
            self.nodes.append(parent)
            new_nodes.append({"level": parent[0], "idx": parent[1], "hash": parent[2]})

    def root(self) -> bytes:
        if not self.nodes:
            return merkle.EMPTY_ROOT
        acc = self.nodes[-1][2]
        for _, _, h in reversed(self.nodes[:-1]):
            acc = merkle.node_hash(h, acc)
        return acc


def _decomposition(size: int) -> list[tuple[int, int]]:
    out, start = [], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, start >> level))
            start += 1 << level
    return out


def origin_of(node: Node) -> str:
    """The ledger's checkpoint origin (and note key name): ``{node host}/ledger``."""
    return f"{node.host}/ledger"


def ledger_signer(node: Node) -> Signer:
    with node.reads() as session:
        key = node.keys.current(session, "node:ledger")
    return Signer(origin_of(node), key.private_key)


class LedgerWriter:
    """A background thread that group-commits ledger entries for this process."""

    def __init__(self, node: Node, *, max_batch: int = 2000, wait_timeout: float = 15.0) -> None:
        self._node = node
        self._max_batch = max_batch
        self._timeout = wait_timeout
        self._queue: queue.SimpleQueue[tuple[str, Future[int]] | str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._halted: str | None = None
        self._signer: Signer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._signer = ledger_signer(self._node)
        self._run_batch([])  # genesis checkpoint and any orphaned outbox rows
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
    def wait(self, refs: Sequence[str]) -> list[int]:
        """Block until the outbox events ``refs`` are committed; their ledger indices."""
        if not refs:
            return []
        if self._halted:
            raise LedgerUnavailable(f"the ledger writer has stopped: {self._halted}")
        if self._thread is None:
            raise LedgerUnavailable("the ledger writer is not running")
        futures: list[Future[int]] = []
        for ref in refs:
            f: Future[int] = Future()
            self._queue.put((ref, f))
            futures.append(f)
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

    def _appended(self, refs: Sequence[str]) -> dict[str, int]:
        """The indices of those of ``refs`` already in the ledger (committed, so signed)."""
        try:
            with self._node.engine.connect() as conn:
                conn.execution_options(sqlite_begin="BEGIN")  # a WAL read takes no lock
                rows = conn.execute(
                    select(LedgerEntry.ref, LedgerEntry.idx).where(LedgerEntry.ref.in_(refs))
                )
                return {ref: idx for ref, idx in rows}  # noqa: C416  rows are Row, not tuple
        except SQLAlchemyError:
            return {}  # the database is down: keep waiting for the writer until the deadline

    # -- the writer thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first == _STOP:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            waiters = [b for b in batch if not isinstance(b, str)]
            self._serve(waiters)
            if stop:
                return

    def _serve(self, waiters: list[tuple[str, Future[int]]]) -> None:
        if self._halted:
            for _, f in waiters:
                f.set_exception(LedgerUnavailable(f"the ledger writer has stopped: {self._halted}"))
            return
        try:
            done = self._run_batch([ref for ref, _ in waiters])
        except LedgerIntegrityError as e:
            self._halted = e.detail
            log.critical("LEDGER INTEGRITY ALARM: %s — refusing to append or sign", e.detail)
            for _, f in waiters:
                f.set_exception(LedgerUnavailable(f"ledger integrity failure: {e.detail}"))
            return
        except Exception as e:  # database down, lock timeout: fail these callers, keep going
            log.exception("ledger batch failed")
            for _, f in waiters:
                f.set_exception(LedgerUnavailable(f"the ledger could not commit: {e}"))
            return
        for ref, f in waiters:
            idx = done.get(ref)
            if idx is None:
                f.set_exception(LedgerUnavailable(f"event {ref} is not in the outbox or ledger"))
            else:
                f.set_result(idx)

    def _run_batch(self, refs: list[str]) -> dict[str, int]:
        engine = self._node.engine
        with engine.connect() as conn:
            conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            done: dict[str, int] = {}
            while True:
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
                    appended = self._append_locked(conn)
                    done.update(appended)
                    # Events another process's writer appended first: found here, under the
                    # lock, so the loop ends as soon as every caller has its index. Otherwise
                    # it keeps draining other processes' new rows, and under sustained load
                    # its callers time out (503) although their entries are committed.
                    missing = [r for r in refs if r not in done]
                    if missing:
                        for ref, idx in conn.execute(
                            select(LedgerEntry.ref, LedgerEntry.idx).where(
                                LedgerEntry.ref.in_(missing)
                            )
                        ):
                            done[ref] = idx
                if not appended or all(r in done for r in refs):
                    return done

    def _append_locked(self, conn: Connection) -> dict[str, int]:
        now_ms = int(self._node.clock.now() * 1000)
        head = conn.execute(
            select(LedgerHead.size, LedgerHead.last_hash).where(LedgerHead.id == 1)
        ).one()
        size, last_hash = int(head[0]), bytes(head[1])
        # Every committed event, in the order the outbox saw them — not only this process's:
        # an event committed before another is never appended after it (a revocation that
        # committed after a grant follows the grant in the ledger), and events of a process
        # that died are appended by whichever writer runs next.
        rows = conn.execute(
            select(LedgerOutbox.seq, LedgerOutbox.ref, LedgerOutbox.event)
            .order_by(LedgerOutbox.seq)
            .limit(self._max_batch)
        ).all()
        last_cp = store.latest_checkpoint(conn)
        if not rows:
            if last_cp is None:
                self._sign(conn, size, merkle.EMPTY_ROOT if size == 0 else None, now_ms, last_cp)
            return {}
        # 1. Storage still matches the head: the last leaf hash is what the chain continues,
        #    and nothing signed or stored lies past it (a head moved back would otherwise end
        #    in a duplicate-key error, retried forever as if the database were merely down).
        if size:
            stored_last = conn.execute(
                select(LedgerEntry.leaf_hash).where(LedgerEntry.idx == size - 1)
            ).scalar_one_or_none()
            if stored_last is None or bytes(stored_last) != last_hash:
                raise LedgerIntegrityError(f"entry {size - 1} no longer matches the ledger head")
        if last_cp is not None and last_cp.size > size:
            raise LedgerIntegrityError(
                f"signed checkpoint {last_cp.size} is ahead of the ledger head ({size})"
            )
        if conn.execute(select(LedgerEntry.idx).where(LedgerEntry.idx == size)).first():
            raise LedgerIntegrityError(f"entry {size} is stored past the ledger head")
        # 2. The frontier of the current tree, from stored subtree hashes.
        coords = _decomposition(size)
        hashes = store.fetch_subtrees(conn, coords)
        try:
            frontier = _Frontier([(lvl, i, hashes[(lvl, i)]) for lvl, i in coords])
        except KeyError as e:
            raise LedgerIntegrityError(f"stored subtree {e} is missing") from e
        # 3. Leaves: chain, subject back-pointers, subtree hashes.
        node_code = self._node.settings.node
        last_for_subject: dict[str, int | None] = {}
        entry_rows: list[dict[str, object]] = []
        node_rows: list[dict[str, object]] = []
        done: dict[str, int] = {}
        for _, ref, event_json in rows:
            event = Event.from_json(event_json)
            prev_subject = None
            if event.subject is not None:
                if event.subject not in last_for_subject:
                    last_for_subject[event.subject] = conn.execute(
                        select(func.max(LedgerEntry.idx)).where(
                            LedgerEntry.subject == event.subject
                        )
                    ).scalar_one_or_none()
                prev_subject = last_for_subject[event.subject]
            leaf = encode_leaf(
                event,
                index=size,
                time_ms=now_ms,
                node=node_code,
                prev=last_hash,
                prev_subject=prev_subject,
            )
            h = merkle.leaf_hash(leaf)
            entry_rows.append(
                {
                    "idx": size,
                    "leaf": leaf,
                    "leaf_hash": h,
                    "ref": ref,
                    "kind": event.kind,
                    "actor": event.actor,
                    "subject": event.subject,
                    "time_ms": now_ms,
                }
            )
            frontier.append(size, h, node_rows)
            if event.subject is not None:
                last_for_subject[event.subject] = size
            done[ref] = size
            size, last_hash = size + 1, h
        conn.execute(insert(LedgerEntry), entry_rows)
        if node_rows:
            conn.execute(insert(LedgerNode), node_rows)
        conn.execute(
            update(LedgerHead).where(LedgerHead.id == 1).values(size=size, last_hash=last_hash)
        )
        conn.execute(delete(LedgerOutbox).where(LedgerOutbox.seq.in_([r[0] for r in rows])))
        # 4. Prove the new tree extends the last signed one, then sign it.
        self._sign(conn, size, frontier.root(), now_ms, last_cp)
        return done

    def _sign(
        self,
        conn: Connection,
        size: int,
        root: bytes | None,
        now_ms: int,
        last: store.StoredCheckpoint | None,
    ) -> None:
        assert self._signer is not None
        if root is None:
            root = store.with_stored_hashes(conn, lambda src: merkle.root_at(size, src))
        if last is not None:
            if last.size > size:
                raise LedgerIntegrityError(
                    f"signed checkpoint {last.size} is ahead of the stored tree ({size})"
                )
            if last.size > 0:
                stored_old = store.with_stored_hashes(conn, lambda s: merkle.root_at(last.size, s))
                if stored_old != last.root:
                    raise LedgerIntegrityError(
                        f"stored tree no longer hashes to signed checkpoint {last.size}"
                    )
                proof = store.with_stored_hashes(
                    conn, lambda s: merkle.consistency_proof(last.size, size, s)
                )
                try:
                    merkle.verify_consistency(last.size, size, last.root, root, proof)
                except VerificationFailed as e:
                    raise LedgerIntegrityError(
                        f"new tree {size} is not consistent with checkpoint {last.size}"
                    ) from e
            elif size == 0:
                return  # the empty tree is already signed
        note = sign_checkpoint(Checkpoint(self._signer.name, size, root), self._signer)
        conn.execute(
            insert(LedgerCheckpoint),
            [{"size": size, "root": root, "note": note, "time_ms": now_ms}],
        )


def record(session: Session, event: Event, *, ref: str, now_ms: int) -> str:
    """Add ``event`` to the outbox in the caller's transaction; wait on ``ref`` after commit."""
    session.add(LedgerOutbox(ref=ref, event=event.to_json(), created_ms=now_ms))
    pending: list[str] = session.info.setdefault("ledger_refs", [])
    pending.append(ref)
    return ref


def pending_refs(session: Session) -> Iterable[str]:
    return tuple(session.info.get("ledger_refs", ()))
