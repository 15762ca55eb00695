"""Granting, listing and revoking consents; the signed ``consent+jwt`` artefact."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from exchange.catalog.service import get_item
from exchange.crypto.jws import sign_jwt
from exchange.errors import InvalidInput, NotFound
from exchange.federation.routing import parse_grantee
from exchange.ledger.leaf import Event
from exchange.ledger.service import log_event, subject_pseudonym
from exchange.node import Node
from exchange.persistence.models import Client, Consent
from exchange.status import service as status
from exchange.subjects.service import Subject

CONSENT_TYP = "consent+jwt"
MAX_VALIDITY = 366 * 86_400  # a consent lasts at most a year
MAX_USES = 1000
ACTIVE, REVOKED = "active", "revoked"


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What a subject grants (shape checked at the HTTP edge)."""

    grantee: str
    item_code: str
    valid_until: int
    max_uses: int
    certificate_types: Sequence[str] | None = None
    claims: Mapping[str, Sequence[str]] | None = None


def _scope(item_code: str, types: Sequence[str] | None,
           claims: Mapping[str, Sequence[str]] | None) -> tuple[str, dict[str, list[str]]]:
    """The national item and, per certificate type, the claims this consent covers.

    Defaults to exactly what the item needs; anything beyond what it needs is refused.
    """
    item = get_item(item_code)
    needs = {r.certificate_type: list(r.claims) for r in item.requirements}
    chosen = list(types) if types is not None else list(needs)
    if not chosen:
        raise InvalidInput("a consent must cover at least one certificate type",
                           code="empty-consent")
    for t in chosen:
        if t not in needs:
            raise InvalidInput(f"item {item.national_item} does not use {t}",
                               code="type-not-needed")
    scope: dict[str, list[str]] = {}
    for t in chosen:
        wanted = list(claims[t]) if claims is not None and t in claims else needs[t]
        extra = sorted(set(wanted) - set(needs[t]))
        if extra:
            raise InvalidInput(f"item {item.national_item} does not need {t} claims {extra}",
                               code="claim-not-needed")
        if not wanted:
            raise InvalidInput(f"no claims of {t} chosen", code="empty-consent")
        scope[t] = sorted(set(wanted))
    if claims is not None and set(claims) - set(chosen):
        raise InvalidInput("claims name a certificate type the consent does not cover",
                           code="type-not-needed")
    return item.national_item, scope


def grant(session: Session, node: Node, subject: Subject, req: GrantRequest) -> Consent:
    """Record a consent, allocate its status entry, sign its artefact, log the grant."""
    now = int(node.clock.now())
    national_item, scope = _scope(req.item_code, req.certificate_types, req.claims)
    # The grantee: a client of this node, or `<province>:<client id>` at a listed peer node.
    province, client_id = parse_grantee(req.grantee, node.settings.node)
    if province == node.settings.node:
        if ":" in req.grantee or session.get(Client, client_id) is None:
            raise InvalidInput(f"no relying party {req.grantee!r} at this node",
                               code="unknown-grantee")
    elif node.federation is None or province not in node.federation.nodes:
        raise InvalidInput(f"node {province} is not in this node's federation",
                           code="unknown-grantee")
    if not now < req.valid_until <= now + MAX_VALIDITY:
        raise InvalidInput("valid_until must be in the future and at most one year ahead",
                           code="bad-validity")
    if not 1 <= req.max_uses <= MAX_USES:
        raise InvalidInput(f"max_uses must be 1..{MAX_USES}", code="bad-max-uses")
    consent_id = f"cst_{secrets.token_urlsafe(18)}"
    list_id, idx = status.allocate(session, "consents", node.clock, node.rng)
    pseudonym = subject_pseudonym(node, subject.subject_id)
    claims = {
        "iss": node.base_url,
        "jti": consent_id,
        "sub": pseudonym,
        "node": node.settings.node,
        "grantee": req.grantee,
        "purpose": national_item,
        "item_code": req.item_code,
        "scope": scope,
        "iat": now,
        "nbf": now,
        "exp": req.valid_until,
        "max_uses": req.max_uses,
        "status": {"status_list": {"idx": idx, "uri": status.list_uri(node.base_url, list_id)}},
    }
    artefact = sign_jwt(claims, node.keys.current(session, "node:consent"), typ=CONSENT_TYP)
    consent = Consent(
        id=consent_id, subject_id=subject.subject_id, grantee=req.grantee,
        national_item=national_item, item_code=req.item_code, scope=scope, valid_from=now,
        valid_until=req.valid_until, max_uses=req.max_uses, uses=0, status=ACTIVE,
        status_list=list_id, status_idx=idx, artefact=artefact, created_at=now,
    )
    session.add(consent)
    session.flush()
    log_event(session, node, Event(kind="consent.granted", actor="subject", outcome="ok",
                                   subject=pseudonym, item=national_item, consent=consent_id))
    return consent


def list_own(session: Session, subject: Subject) -> list[Consent]:
    return list(session.scalars(
        select(Consent).where(Consent.subject_id == subject.subject_id)
        .order_by(Consent.created_at.desc(), Consent.id)
    ))


def revoke(session: Session, node: Node, subject: Subject, consent_id: str) -> Consent:
    """Revoke at once: the status list and every later pull see it."""
    consent = session.get(Consent, consent_id, with_for_update=True)
    # Another subject's consent is reported as absent: no oracle for consent ids.
    if consent is None or consent.subject_id != subject.subject_id:
        raise NotFound(f"consent {consent_id} not found", code="consent-not-found")
    if consent.status == REVOKED:
        return consent
    now = int(node.clock.now())
    session.execute(update(Consent).where(Consent.id == consent_id)
                    .values(status=REVOKED, revoked_at=now))
    status.set_status(session, consent.status_list, consent.status_idx, status.REVOKED)
    session.refresh(consent)
    log_event(session, node, Event(
        kind="consent.revoked", actor="subject", outcome="ok",
        subject=subject_pseudonym(node, subject.subject_id), item=consent.national_item,
        consent=consent.id))
    return consent
