"""What the rest of the node uses of the ledger: record an event, wait for it, read proofs."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from exchange.crypto.canonical import canonical_json
from exchange.errors import LedgerUnavailable
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


def commit_wait(node: Node, session: Session) -> list[int]:
    """After ``session`` committed: wait for its ledger events; their indices."""
    refs = list(pending_refs(session))
    session.info.pop("ledger_refs", None)
    if not refs:
        return []
    if node.ledger is None:
        raise LedgerUnavailable("this process has no ledger writer running")
    return node.ledger.wait(refs)


# -- reading: checkpoints, proofs, receipts, entries (all through one short connection) -----


def latest_checkpoint_note(node: Node) -> str:
    from exchange.errors import NotFound
    from exchange.ledger import store

    with node.engine.connect() as conn:
        cp = store.latest_checkpoint(conn)
    if cp is None:
        raise NotFound("the ledger has no signed checkpoint yet", code="no-checkpoint")
    return cp.note


def verifier_key(node: Node) -> str:
    """The C2SP verifier key ``name+hexID+base64(0x01||pubkey)`` of the ledger key."""
    from exchange.ledger.writer import ledger_signer

    return ledger_signer(node).vkey()


def inclusion_proof(node: Node, index: int, size: int | None) -> tuple[int, list[bytes]]:
    from exchange.ledger import store

    with node.engine.connect() as conn:
        if size is None:
            cp = store.checkpoint_covering(conn, index)
            size = cp.size
        return size, store.inclusion(conn, index, size)


def consistency_proof(node: Node, first: int, second: int) -> list[bytes]:
    from exchange.ledger import store

    with node.engine.connect() as conn:
        return store.consistency(conn, first, second)


def receipt(node: Node, index: int) -> str:
    from exchange.ledger import store

    with node.engine.connect() as conn:
        return store.receipt(conn, index)


def entries(node: Node, start: int, end: int) -> list[tuple[int, bytes]]:
    from exchange.ledger import store

    with node.engine.connect() as conn:
        return [(e.index, e.leaf) for e in store.entries(conn, start, end)]
