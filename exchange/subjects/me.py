"""A subject's own view: its certificates and every ledger entry about it, with receipts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from exchange.crypto.encoding import b64_encode
from exchange.ledger import proofs, store
from exchange.ledger.service import subject_pseudonym
from exchange.node import Node
from exchange.persistence.models import Certificate, Client, PeerReceipt
from exchange.subjects.service import Subject

ACCESS_LOG_MAX = 200


def my_certificates(session: Session, subject: Subject) -> list[Certificate]:
    return list(session.scalars(
        select(Certificate).where(Certificate.subject_id == subject.subject_id)
        .order_by(Certificate.issued_at.desc(), Certificate.id)
    ))


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    index: int
    time_ms: int
    kind: str
    actor: str
    actor_name: str | None
    item: str | None
    certificate: str | None
    consent: str | None
    outcome: str
    reason: str | None
    prev_subject: int | None
    leaf: str
    receipt: str | None
    peer_receipts: dict[str, str]


def access_log(session: Session, node: Node, subject: Subject,
               before: int | None = None, limit: int = 100) -> list[AccessLogEntry]:
    """Newest first: who did what about this subject, each with its leaf and receipt.

    Following ``prev_subject`` from the newest entry reaches every entry about the subject;
    the receipts prove each is in the signed log.
    """
    limit = max(1, min(limit, ACCESS_LOG_MAX))
    pseudonym = subject_pseudonym(node, subject.subject_id)
    rows = [(e.index, e.leaf) for e in
            store.subject_entries(session.connection(), pseudonym, before=before, limit=limit)]
    names = dict(session.execute(select(Client.id, Client.name)).all())
    peer: dict[int, dict[str, str]] = {}
    for idx, province, peer_rec in session.execute(
        select(PeerReceipt.ledger_index, PeerReceipt.province, PeerReceipt.receipt)
        .where(PeerReceipt.ledger_index.in_([r[0] for r in rows]))
    ):
        peer.setdefault(idx, {})[province] = peer_rec
    conn = session.connection()
    cp = store.latest_checkpoint(conn)
    out = []
    for idx, raw in rows:
        f: dict[str, Any] = orjson.loads(raw)
        rec = proofs.receipt(conn, idx, cp) if cp is not None and cp.size > idx else None
        out.append(AccessLogEntry(
            index=idx, time_ms=f["time_ms"], kind=f["kind"], actor=f["actor"],
            actor_name=names.get(f["actor"]), item=f["item"], certificate=f["certificate"],
            consent=f["consent"], outcome=f["outcome"], reason=f["reason"],
            prev_subject=f["prev_subject"], leaf=b64_encode(bytes(raw)), receipt=rec,
            peer_receipts=peer.get(idx, {})))
    return out
