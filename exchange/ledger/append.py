"""One batch of ledger entries, appended under the database lock.

:class:`BatchAppender` is what the group-commit writer (:mod:`.writer`) runs for every
batch: under the lock (``pg_advisory_xact_lock`` / ``BEGIN IMMEDIATE``) it reads the head,
checks that the stored tree still hashes to the last signed checkpoint, appends every
committed outbox row in outbox order and then the direct events in submission order —
leaves, hash chain, subject back-pointers, new subtree hashes, head — and signs a
checkpoint of the new tree; the caller's transaction then commits it. Several processes
over one database still produce one linear chain: each batch starts from the head it reads
under the lock.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import Connection, bindparam, delete, insert, select, update

from exchange.errors import LedgerIntegrityError, VerificationFailed
from exchange.ledger import merkle, pgbatch, store
from exchange.ledger.backpointers import SubjectIndex
from exchange.ledger.checkpoint import Checkpoint, sign_checkpoint
from exchange.ledger.leaf import Event
from exchange.ledger.leaves import Frontier, LeafBatch, Ref
from exchange.ledger.note import Signer
from exchange.ledger.store import Coord
from exchange.node import Node
from exchange.persistence.models import (
    LedgerCheckpoint,
    LedgerEntry,
    LedgerHead,
    LedgerNode,
    LedgerOutbox,
)

LOCK_KEY = 0x63657274_6C656467  # "certledg": the advisory lock every writer process takes

# The batch's statements, built once (they run in every batch: building a Core
# statement each time cost more than sending it). Values are bound per call.
_HEAD = select(LedgerHead.size, LedgerHead.last_hash).where(LedgerHead.id == 1)
_OUTBOX_ROWS = (
    select(LedgerOutbox.seq, LedgerOutbox.ref, LedgerOutbox.event)
    .order_by(LedgerOutbox.seq)
    .limit(bindparam("n"))
)
_MOVE_HEAD = (
    update(LedgerHead)
    .where(LedgerHead.id == 1)
    .values(size=bindparam("size"), last_hash=bindparam("last_hash"))
)
_DROP_OUTBOX = delete(LedgerOutbox).where(LedgerOutbox.seq.in_(bindparam("seqs", expanding=True)))
_CHECKPOINT_INSERT = insert(LedgerCheckpoint)
_ENTRY_COLUMNS = (
    "idx", "leaf", "leaf_hash", "ref", "kind", "actor", "subject", "time_ms", "subject_prefix"
)
_NODE_COLUMNS = ("level", "idx", "hash")


class BatchAppender:
    """Appends batches for one writer: its node, ledger key and memory of subjects."""

    def __init__(self, node: Node, signer: Signer, *, max_batch: int) -> None:
        self._node = node
        self._signer = signer
        self._max_batch = max_batch
        self._subjects = SubjectIndex()
        # The head this writer's last batch committed, and the one its current batch would
        # commit: on PostgreSQL the next batch reads the subtrees for it with the lock.
        self._head: tuple[int, bytes] | None = None
        self._next_head: tuple[int, bytes] | None = None

    def run(
        self,
        refs: list[str],
        direct: list[tuple[Ref, Event]],
        committed: dict[Ref, int] | None = None,
    ) -> dict[Ref, int]:
        """Append batches until every outbox ref in ``refs`` has its index, the ``direct``
        events (ref, event) in the first; ``committed`` (returned) gains each transaction's
        entries only once that transaction committed."""
        done: dict[Ref, int] = {} if committed is None else committed
        engine = self._node.engine
        with engine.connect() as conn:
            conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            while True:
                self._subjects.discard()  # what a batch that did not commit had learned
                self._next_head = self._head
                with conn.begin():
                    appended = self._append_locked(conn, direct)
                    direct = []  # appended (if this commits) or failed: never twice
                    found = dict(appended)
                    # Events another process's writer appended first: found here, under the
                    # lock, so the loop ends as soon as every caller has its index. Otherwise
                    # it keeps draining other processes' new rows, and under sustained load
                    # its callers time out (503) although their entries are committed.
                    missing = [r for r in refs if r not in done and r not in found]
                    if missing:
                        found.update(store.indices_of_refs(conn, missing))
                done.update(found)  # committed
                self._subjects.committed()
                self._head = self._next_head
                if not appended or all(r in done for r in refs):
                    return done

    def _append_locked(self, conn: Connection, direct: list[tuple[Ref, Event]]) -> dict[Ref, int]:
        """One batch under the lock: outbox rows, then ``direct``; ref → index."""
        if conn.dialect.name == "postgresql":
            with store.driver(conn) as raw:
                return self._append_batch(conn, raw, direct)
        return self._append_batch(conn, None, direct)

    def _append_batch(
        self, conn: Connection, raw: psycopg.Connection[Any] | None, direct: list[tuple[Ref, Event]]
    ) -> dict[Ref, int]:
        now_ms = int(self._node.clock.now() * 1000)
        state = self._read(conn, raw, direct)
        if not state.outbox and not direct:
            if state.checkpoint is None:
                size = state.size
                root = merkle.EMPTY_ROOT if size == 0 else None
                self._sign(conn, size, root, now_ms, state.checkpoint)
            return {}
        frontier, at_head = _verified_frontier(conn, state)
        # 3. Leaves: chain, subject back-pointers, subtree hashes.
        events: list[tuple[Ref, Event]] = [
            (ref, Event.from_json(event_json)) for _, ref, event_json in state.outbox
        ]
        events += direct
        batch = LeafBatch(
            size=state.size,
            last_hash=state.last_hash,
            frontier=frontier,
            node=self._node.settings.node,
            time_ms=now_ms,
            last_for_subject=self._subjects.lookup(
                conn,
                (state.size, state.last_hash),
                {e.subject for _, e in events if e.subject is not None},
                read=state.subjects,
            ),
        )
        columns = batch.columns(events, stored=len(state.outbox))
        size, last_hash = batch.size, batch.last_hash
        self._subjects.appended((size, last_hash), batch.last_for_subject)
        self._next_head = (size, last_hash)
        root = frontier.root()
        # 4. Sign the new tree. When the old tree is the signed one at the head (checked by
        #    _verified_frontier), the new root is that verified frontier extended by this
        #    batch's leaves, so the new tree is consistent with the old by construction: a
        #    consistency proof read back from storage would only restate the hashes just
        #    computed. Otherwise (no checkpoint at the head) prove it from storage, once the
        #    rows are in, before signing.
        signed = (size, root, self._note(size, root), now_ms) if at_head else None
        drop = [r[0] for r in state.outbox]
        if raw is not None:
            pgbatch.write(
                raw,
                entries=columns,
                time_ms=now_ms,
                nodes=batch.nodes,
                head=(size, last_hash),
                drop=drop,
                checkpoint=signed,
            )
        else:
            _insert_rows(conn, columns, now_ms, batch.nodes)
            conn.execute(_MOVE_HEAD, {"size": size, "last_hash": last_hash})
            if drop:
                conn.execute(_DROP_OUTBOX, {"seqs": drop})
            if signed is not None:
                self._store_note(conn, *signed)
        if signed is None:
            self._sign(conn, size, root, now_ms, state.checkpoint)
        return batch.done

    def _read(
        self, conn: Connection, raw: psycopg.Connection[Any] | None, direct: list[tuple[Ref, Event]]
    ) -> pgbatch.Locked:
        """Everything a batch reads under the lock. Every committed outbox event, in the
        order the outbox saw them — not only this process's: an event committed before
        another is never appended after it (a revocation that committed after a grant
        follows the grant in the ledger), and events of a process that died are appended by
        whichever writer runs next."""
        if raw is not None:
            # The lock and every read in one round trip; the subtrees and the direct events'
            # subjects for the head this writer expects (read again if another moved it).
            expected = self._head
            return pgbatch.read(
                raw,
                lock_key=LOCK_KEY,
                limit=self._max_batch,
                probe=None if expected is None else (expected[0], _probe(expected[0])),
                subjects=self._subjects.missing(
                    expected, {e.subject for _, e in direct if e.subject is not None}
                ),
            )
        head = conn.execute(_HEAD).one()
        return pgbatch.Locked(
            size=int(head[0]),
            last_hash=bytes(head[1]),
            outbox=[(r[0], r[1], r[2]) for r in conn.execute(_OUTBOX_ROWS, {"n": self._max_batch})],
            checkpoint=store.latest_checkpoint(conn),
            subtrees=None,
            subjects={},
        )

    def _sign(
        self,
        conn: Connection,
        size: int,
        root: bytes | None,
        now_ms: int,
        last: store.StoredCheckpoint | None,
    ) -> None:
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
        self._store_note(conn, size, root, self._note(size, root), now_ms)

    def _note(self, size: int, root: bytes) -> str:
        return sign_checkpoint(Checkpoint(self._signer.name, size, root), self._signer)

    @staticmethod
    def _store_note(conn: Connection, size: int, root: bytes, note: str, now_ms: int) -> None:
        conn.execute(
            _CHECKPOINT_INSERT, {"size": size, "root": root, "note": note, "time_ms": now_ms}
        )


def _verified_frontier(conn: Connection, state: pgbatch.Locked) -> tuple[Frontier, bool]:
    """The frontier of the stored tree at the head, checked; and whether the last signed
    checkpoint is at the head.

    1. Storage still matches the head: the last leaf hash is what the chain continues, and
       nothing signed or stored lies past it (a head moved back would otherwise end in a
       duplicate-key error, retried forever as if the database were merely down).
    2. The frontier of the current tree from its stored subtree hashes, and the stored-root
       re-check: when the last signed checkpoint is at the head — always, unless a
       checkpoint is missing — the fold of those stored hashes must be its root. Both every
       batch, in one read: the leaves either side of the head and the O(log n) subtrees the
       frontier needs anyway. Keeping the frontier in memory between batches instead would
       save only that one read, and the check would then run only when another process
       moved the head or now and then; reading them each time means no batch ever builds
       on, or signs over, a stored tree that is not the tree last signed. (On PostgreSQL
       that read went with the lock, for the head this writer expected; it is made here
       only when the head is another.)
    """
    size, last_hash, last_cp = state.size, state.last_hash, state.checkpoint
    stored = state.subtrees
    if stored is None:
        stored = store.fetch_subtrees(conn, _probe(size))
    if size and stored.get((0, size - 1)) != last_hash:
        raise LedgerIntegrityError(f"entry {size - 1} no longer matches the ledger head")
    if last_cp is not None and last_cp.size > size:
        raise LedgerIntegrityError(
            f"signed checkpoint {last_cp.size} is ahead of the ledger head ({size})"
        )
    if (0, size) in stored:
        raise LedgerIntegrityError(f"entry {size} is stored past the ledger head")
    try:
        frontier = Frontier([(lvl, i, stored[(lvl, i)]) for lvl, i in store.decomposition(0, size)])
    except KeyError as e:
        raise LedgerIntegrityError(f"stored subtree {e} is missing") from e
    at_head = last_cp is not None and last_cp.size == size
    if last_cp is not None and at_head and frontier.root() != bytes(last_cp.root):
        raise LedgerIntegrityError(f"stored tree no longer hashes to signed checkpoint {size}")
    return frontier, at_head


def _probe(size: int) -> list[Coord]:
    """The stored hashes a batch at ``size`` reads: the leaves either side of the head and
    the frontier's subtrees (its leaf, if any, is the one before the head)."""
    probe = [(0, size), *(c for c in store.decomposition(0, size) if c[0])]
    if size:
        probe.append((0, size - 1))
    return probe


def _insert_rows(
    conn: Connection, rows: pgbatch.Columns, time_ms: int, nodes: list[tuple[int, int, bytes]]
) -> None:
    """Insert entry rows, then ``nodes``, in the connection's transaction (SQLite)."""
    conn.execute(
        insert(LedgerEntry),
        [dict(zip(_ENTRY_COLUMNS, r, strict=True)) for r in rows.rows(time_ms)],
    )
    if nodes:
        conn.execute(insert(LedgerNode), [dict(zip(_NODE_COLUMNS, r, strict=True)) for r in nodes])
