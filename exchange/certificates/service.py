"""Issuing certificates as SD-JWT VCs and changing their status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from exchange.certificates.types import get_type
from exchange.clients.model import SCOPE_ISSUE, SCOPE_READ, SCOPE_STATUS, Principal
from exchange.clients.service import require_scope
from exchange.crypto.sdjwt import issue_sd_jwt
from exchange.errors import Conflict, Forbidden, InvalidInput, NotFound
from exchange.identifiers import classify_subject_id, make_certificate_id
from exchange.keys.service import agency_owner
from exchange.ledger.leaf import Event
from exchange.ledger.service import log_event, request_digest, subject_pseudonym
from exchange.node import Node
from exchange.persistence.insert import claim_row
from exchange.persistence.models import Agency, Certificate
from exchange.status import service as status

DEFAULT_VALIDITY = 10 * 365 * 86_400
MAX_VALIDITY = 50 * 365 * 86_400


@dataclass(frozen=True, slots=True)
class IssueRequest:
    """What an agency asks to issue (validated at the HTTP edge for shape only)."""

    type: str
    subject_id: str
    claims: Mapping[str, Any]
    valid_from: int | None = None
    valid_until: int | None = None


def issuer_url(base_url: str, uscc: str) -> str:
    return f"{base_url}/issuers/{uscc}"


_AGENCY_TYPES = select(Agency.types).where(Agency.uscc == bindparam("uscc"))


def issue(session: Session, node: Node, principal: Principal, req: IssueRequest) -> Certificate:
    """Validate, assign identifier and status index, sign; the caller commits."""
    require_scope(principal, SCOPE_ISSUE)
    # 1. The caller is an agency authorised for this type.
    ctype = get_type(req.type)
    types = (
        session.connection().execute(_AGENCY_TYPES, {"uscc": principal.agency_uscc}).scalar()
        if principal.agency_uscc else None
    )
    if types is None or principal.kind != "agency" or principal.agency_uscc is None:
        raise Forbidden("only issuing agencies may issue certificates", code="not-an-agency")
    uscc = principal.agency_uscc
    if ctype.key not in types:
        raise Forbidden(
            f"agency {uscc} is not authorised to issue {ctype.key}",
            code="type-not-authorised",
        )
    # 2. The subject identifier is valid and of a kind this type is about.
    kind = classify_subject_id(req.subject_id)
    if kind not in ctype.subject_kinds:
        raise InvalidInput(
            f"{ctype.key} is issued to a {' or '.join(ctype.subject_kinds)}, not a {kind}",
            code="wrong-subject-kind",
        )
    # 3. Claims against the type; validity window.
    claims = ctype.validate_claims(req.claims)
    now = int(node.clock.now())
    valid_from = req.valid_from if req.valid_from is not None else now
    valid_until = req.valid_until if req.valid_until is not None else valid_from + DEFAULT_VALIDITY
    if valid_until <= valid_from or valid_until <= now:
        raise InvalidInput(
            "valid_until must be after valid_from and in the future", code="bad-validity"
        )
    if valid_until - valid_from > MAX_VALIDITY:
        raise InvalidInput("validity may not exceed 50 years", code="bad-validity")
    # 4. Status index drawn at random, never reused; identifier unique.
    list_id, idx = status.allocate(session, "certificates", node.clock, node.rng)
    key = node.keys.current(session, agency_owner(uscc))
    day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
    for _ in range(8):
        serial = f"{day}{node.rng.randrange(10**8):08d}"
        cert_id = make_certificate_id(ctype.type_code, uscc, serial, 1)
        # 5. Sign: plain claims per DESIGN.md §4; every claim about the subject disclosable.
        plain = {
            "iss": issuer_url(node.base_url, uscc),
            "iat": now,
            "nbf": valid_from,
            "exp": valid_until,
            "vct": ctype.vct,
            "certificate_id": cert_id,
            "status": {"status_list": {"idx": idx, "uri": status.list_uri(node.base_url, list_id)}},
        }
        credential = issue_sd_jwt(
            key=key, plain_claims=plain, disclosable={"sub": req.subject_id, **claims}
        )
        row: dict[str, Any] = {
            "id": cert_id,
            "type": ctype.key,
            "issuer_uscc": uscc,
            "subject_id": req.subject_id,
            "subject_kind": kind,
            "claims": claims,
            "credential": credential,
            "kid": key.kid,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "status": "valid",
            "status_list": list_id,
            "status_idx": idx,
            "issued_at": now,
            "updated_at": now,
        }
        # One statement claims the identifier; a taken serial (10^8 a day per type and
        # agency) is drawn again and the credential signed again.
        if claim_row(session, Certificate, row):
            break
    else:  # pragma: no cover - 10^8 serials a day
        raise Conflict("could not allocate a certificate serial")
    cert = Certificate(**row)  # as stored; not attached to the session (no reload needed)
    # 6. The issuance is logged in the same transaction (no personal data in the entry).
    log_event(
        session,
        node,
        Event(
            kind="certificate.issued",
            actor=uscc,
            outcome="ok",
            subject=subject_pseudonym(node, req.subject_id),
            certificate=cert_id,
            request_sha256=request_digest(
                {
                    "type": req.type,
                    "subject_id": req.subject_id,
                    "claims": claims,
                    "valid_from": valid_from,
                    "valid_until": valid_until,
                }
            ),
        ),
    )
    return cert


def _own(session: Session, principal: Principal, cert_id: str) -> Certificate:
    cert = session.get(Certificate, cert_id)
    # Another agency's certificate is reported as absent: no cross-tenant oracle.
    if cert is None or principal.agency_uscc != cert.issuer_uscc:
        raise NotFound(f"certificate {cert_id} not found", code="certificate-not-found")
    return cert


def get(session: Session, principal: Principal, cert_id: str) -> Certificate:
    """The issuing agency's view of one of its certificates."""
    require_scope(principal, SCOPE_READ)
    return _own(session, principal, cert_id)


def set_status(
    session: Session, node: Node, principal: Principal, cert_id: str, new: str, reason: str
) -> Certificate:
    """valid ↔ suspended; → revoked is final. The status list shows it on the next fetch."""
    require_scope(principal, SCOPE_STATUS)
    if new not in status.STATUS_CODES:
        raise InvalidInput("status must be valid, suspended or revoked", code="bad-status")
    if not reason.strip() or len(reason) > 500:
        raise InvalidInput("a reason of 1-500 characters is required", code="bad-reason")
    cert = _own(session, principal, cert_id)
    session.refresh(cert, with_for_update=True)
    if cert.status == "revoked":
        raise Conflict("a revoked certificate cannot change status", code="revoked-is-final")
    status.set_status(session, cert.status_list, cert.status_idx, status.STATUS_CODES[new])
    cert.status = new
    cert.status_reason = reason
    cert.updated_at = int(node.clock.now())
    log_event(
        session,
        node,
        Event(
            kind="certificate.status",
            actor=cert.issuer_uscc,
            outcome="ok",
            subject=subject_pseudonym(node, cert.subject_id),
            certificate=cert.id,
            reason=new,
            request_sha256=request_digest({"id": cert.id, "status": new, "reason": reason}),
        ),
    )
    return cert


def list_for_subject(session: Session, subject_id: str) -> list[Certificate]:
    return list(
        session.scalars(
            select(Certificate)
            .where(Certificate.subject_id == subject_id)
            .order_by(Certificate.issued_at)
        )
    )
