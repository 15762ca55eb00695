"""What the rest of the node uses of the ledger: record an event, wait for it, read proofs."""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from exchange.crypto.canonical import canonical_json
from exchange.errors import ExchangeError, LedgerUnavailable
from exchange.ledger.leaf import Event, SubjectPseudonym, pseudonym
from exchange.ledger.writer import pending_refs, record
from exchange.node import Node


def request_digest(request: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of what was asked: binds the entry to the request."""
    return hashlib.sha256(canonical_json(dict(request))).hexdigest()


def subject_pseudonym(node: Node, subject_id: str) -> SubjectPseudonym:
    return pseudonym(node.subject_key, subject_id)


def log_event(session: Session, node: Node, event: Event) -> str:
    """Record ``event`` in the caller's transaction; it is appended once that commits."""
    return record(session, event, ref=str(uuid.uuid4()), now_ms=int(node.clock.now() * 1000))


def take_refs(session: Session) -> list[str]:
    """The outbox refs of the events recorded in ``session`` (forgotten by the session)."""
    refs = list(pending_refs(session))
    session.info.pop("ledger_refs", None)
    return refs


def wait_refs(node: Node, refs: Sequence[str]) -> list[int]:
    """After the transaction holding ``refs`` committed: wait for them; their indices."""
    if not refs:
        return []
    if node.ledger is None:
        raise LedgerUnavailable("this process has no ledger writer running")
    return node.ledger.wait(refs)


def commit_wait(node: Node, session: Session) -> list[int]:
    """After ``session`` committed: wait for its ledger events; their indices."""
    return wait_refs(node, take_refs(session))


def append_events(node: Node, events: Sequence[Event]) -> list[int]:
    """Append events that are not part of a business transaction (no outbox row): block
    until the writer's batch holding them has committed; their indices, in order.
    LedgerUnavailable if that batch failed, the writer is halted or not running, or the wait
    timed out (see :meth:`LedgerWriter.append`)."""
    if node.ledger is None:
        raise LedgerUnavailable("this process has no ledger writer running")
    return node.ledger.append(events)


async def append_events_async(node: Node, events: Sequence[Event]) -> list[int]:
    """:func:`append_events` for asyncio callers: awaits without blocking the event loop."""
    if node.ledger is None:
        raise LedgerUnavailable("this process has no ledger writer running")
    return await node.ledger.append_async(events)


# -- reading: checkpoints, proofs, receipts, entries (all through one short connection) -----


def _reads(node: Node) -> Engine:
    """The node's engine for short reads: PostgreSQL autocommit (no BEGIN/ROLLBACK round
    trips around one SELECT), SQLite deferred BEGIN (reads never take the write lock)."""
    engine = node.engine
    cached = _read_engines.get(engine)
    if cached is None:
        opts = (
            {"isolation_level": "AUTOCOMMIT"}
            if engine.dialect.name == "postgresql"
            else {"sqlite_begin": "BEGIN"}
        )
        cached = _read_engines[engine] = engine.execution_options(**opts)
    return cached


_read_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def latest_checkpoint_note(node: Node) -> str:
    from exchange.errors import NotFound
    from exchange.ledger import readcache

    with _reads(node).connect() as conn:
        cp = readcache.recent_checkpoint(conn)
    if cp is None:
        raise NotFound("the ledger has no signed checkpoint yet", code="no-checkpoint")
    return cp.note


def verifier_key(node: Node) -> str:
    """The C2SP verifier key ``name+hexID+base64(0x01||pubkey)`` of the ledger key."""
    from exchange.ledger.writer import ledger_signer

    return ledger_signer(node).vkey()


def inclusion_proof(node: Node, index: int, size: int | None) -> tuple[int, list[bytes]]:
    """(the size proved for, the audit path): ``size`` defaults to a recent checkpoint's."""
    from exchange.ledger import proofs, readcache

    with _reads(node).connect() as conn:
        if size is None:
            cp = readcache.checkpoint_covering(conn, index)
            size = cp.size
        return size, proofs.inclusion(conn, index, size)


def cached_inclusion_proof(
    node: Node, index: int, size: int | None
) -> tuple[int, list[bytes]] | None:
    """:func:`inclusion_proof` from the read path's cache alone (no database, no waiting), or
    None when it needs a read: then ask :func:`inclusion_proofs`."""
    from exchange.ledger import proofs

    return proofs.cached_inclusion(_reads(node), index, size)


def inclusion_proofs(
    node: Node, asks: Sequence[tuple[int, int | None]]
) -> list[tuple[int, list[bytes]] | ExchangeError]:
    """:func:`inclusion_proof` for many asks through one connection and at most one read of
    stored hashes: ``(size, path)`` or the error, per ask."""
    from exchange.ledger import proofs

    with _reads(node).connect() as conn:
        return proofs.inclusion_many(conn, asks)


def consistency_proof(node: Node, first: int, second: int) -> list[bytes]:
    from exchange.ledger import proofs

    with _reads(node).connect() as conn:
        return proofs.consistency(conn, first, second)


def receipt(node: Node, index: int) -> str:
    from exchange.ledger import proofs

    with _reads(node).connect() as conn:
        return proofs.receipt(conn, index)


def receipts(node: Node, indices: Sequence[int]) -> list[str | ExchangeError]:
    """:func:`receipt` for many indices through one connection and at most one read of
    stored hashes: the receipt or the error, per index."""
    from exchange.ledger import proofs

    with _reads(node).connect() as conn:
        return proofs.receipts(conn, indices)


def entries(node: Node, start: int, end: int) -> list[tuple[int, bytes]]:
    from exchange.ledger import store

    with node.engine.connect() as conn:
        return [(e.index, e.leaf) for e in store.entries(conn, start, end)]
