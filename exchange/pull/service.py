"""Deciding a pull (consent, certificates, exact use counts) and releasing it after the log.

The decision and its ledger event are committed together; ``release`` runs only after the
event is durably in the ledger (invariant 1: no receipt, no data). Every attempt — granted
or denied — leaves one ledger entry with a machine-readable reason (invariant 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from exchange.catalog.service import get_item
from exchange.clients.model import SCOPE_PULL, Principal
from exchange.clients.service import require_scope
from exchange.crypto.sdjwt import present
from exchange.identifiers import classify_subject_id, national_item_of
from exchange.ledger.leaf import Event
from exchange.ledger.service import log_event, receipt, request_digest, subject_pseudonym
from exchange.node import Node
from exchange.persistence.models import Certificate, Client, Consent

NOT_FOUND_REASONS = frozenset({"consent-not-found", "certificate-missing"})


@dataclass(frozen=True, slots=True)
class PullRequest:
    subject_id: str
    item_code: str
    consent_id: str


@dataclass(frozen=True, slots=True)
class Release:
    """One certificate to present, and the claims that may be disclosed."""

    type: str
    certificate_id: str
    credential: str
    disclose: frozenset[str]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of the checks, already logged in the caller's transaction."""

    granted: bool
    reason: str | None
    detail: str
    releases: tuple[Release, ...] = ()

    @property
    def not_found(self) -> bool:
        return self.reason in NOT_FOUND_REASONS


@dataclass(frozen=True, slots=True)
class PullResult:
    credentials: list[dict[str, str]]
    receipt: str
    ledger_index: int


# The decision's statements, built once (with bound parameters) and run on the session's
# connection: no statement construction, cache-key walk or ORM execution layer per pull.
_CLIENT_ITEMS = select(Client.items).where(Client.id == bindparam("client_id"))
_CERTIFICATES = (
    select(Certificate.id, Certificate.credential, Certificate.status,
           Certificate.valid_from, Certificate.valid_until)
    .where(Certificate.subject_id == bindparam("subject_id"),
           Certificate.type == bindparam("ctype"))
    .order_by(Certificate.issued_at.desc(), Certificate.id)
)
_CONSENT = select(
    Consent.id, Consent.subject_id, Consent.grantee, Consent.national_item, Consent.scope,
    Consent.valid_from, Consent.valid_until, Consent.max_uses, Consent.uses, Consent.status,
).where(Consent.id == bindparam("consent_id"))
_CONSENT_STATUS = select(Consent.status).where(Consent.id == bindparam("consent_id"))
_COUNT_USE = (
    update(Consent)
    .where(Consent.id == bindparam("consent_id"), Consent.status == "active",
           Consent.uses < Consent.max_uses, Consent.valid_until > bindparam("now"))
    .values(uses=Consent.uses + 1)
)


def _client_items(session: Session, client_id: str) -> set[str]:
    """The national items a client of this node may use (none if it does not exist)."""
    codes = session.connection().execute(_CLIENT_ITEMS, {"client_id": client_id}).scalar()
    items: set[str] = set()
    for code in codes or ():
        try:
            items.add(national_item_of(code))
        except ValueError:  # pragma: no cover - validated when registered
            continue
    return items


@dataclass(frozen=True, slots=True)
class _Held:
    """What a pull needs of a stored certificate (columns, not an ORM instance)."""

    id: str
    credential: str
    status: str
    valid_from: int
    valid_until: int


def _current_certificate(session: Session, subject_id: str, ctype: str,
                         now: int) -> _Held | str:
    """The subject's newest valid certificate of ``ctype``, or the reason there is none."""
    certs = [_Held(*row) for row in session.connection().execute(
        _CERTIFICATES, {"subject_id": subject_id, "ctype": ctype})]
    for cert in certs:
        if cert.status == "valid" and cert.valid_from <= now < cert.valid_until:
            return cert
    if not certs:
        return "certificate-missing"
    statuses = {c.status for c in certs}
    if "suspended" in statuses:
        return "certificate-suspended"
    if "revoked" in statuses:
        return "certificate-revoked"
    return "certificate-expired"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks. A client of this node has its registered items checked here; a peer node's
    client (``"50:bank-cq-1"``) had them checked at its own node."""

    grantee: str  # the name consents use
    client_id: str | None  # a local client whose items are checked, or None for a peer's
    kind: str = "pull"  # the ledger event kind


@dataclass(frozen=True, slots=True)
class ConsentTerms:
    """What a consent allows, from this node's row or from a verified peer artefact."""

    id: str
    subject: str  # pseudonym
    grantee: str
    national_item: str
    scope: dict[str, list[str]]
    valid_from: int
    valid_until: int
    max_uses: int
    uses: int
    active: bool

    @classmethod
    def load(cls, session: Session, node: Node, consent_id: str) -> ConsentTerms | None:
        """The terms of this node's consent ``consent_id`` (one row read, no ORM instance)."""
        row = session.connection().execute(_CONSENT, {"consent_id": consent_id}).first()
        if row is None:
            return None
        return cls(row.id, subject_pseudonym(node, row.subject_id), row.grantee,
                   row.national_item, dict(row.scope), row.valid_from, row.valid_until,
                   row.max_uses, row.uses, row.status == "active")


def _consent_refusal(
    terms: ConsentTerms | None, subject: str, grantee: str, national_item: str,
    needed_types: set[str], now: int,
) -> tuple[str, str] | None:
    """(reason, detail) why the consent does not allow this pull, or None if it does."""
    if terms is None:
        return ("consent-not-found", "no such consent")
    uncovered = sorted(needed_types - set(terms.scope))
    checks = (
        (terms.subject != subject, "consent-other-subject",
         "the consent was granted by another subject"),
        (terms.grantee != grantee, "consent-other-grantee",
         "the consent was granted to another relying party"),
        (terms.national_item != national_item, "consent-wrong-item",
         "the consent is for another item (purpose)"),
        (not terms.active, "consent-revoked", "the consent has been revoked"),
        (now < terms.valid_from, "consent-not-yet-valid", "the consent is not valid yet"),
        (now >= terms.valid_until, "consent-expired", "the consent has expired"),
        (bool(uncovered), "consent-does-not-cover", f"the consent does not cover {uncovered}"),
        (terms.uses >= terms.max_uses, "consent-exhausted", "the consent has no uses left"),
    )
    return next(((reason, detail) for failed, reason, detail in checks if failed), None)


def decide(session: Session, node: Node, principal: Principal, req: PullRequest) -> Decision:
    """A pull by a client of this node, under a consent held at this node."""
    require_scope(principal, SCOPE_PULL)
    return decide_for(session, node, Requester(principal.client_id, principal.client_id), req)


def decide_for(  # noqa: PLR0911  one return per numbered step
    session: Session, node: Node, requester: Requester, req: PullRequest, *,
    remote: ConsentTerms | None = None, refused: tuple[str, str] | None = None,
    forwarding: bool = False,
) -> Decision:
    """Check everything, log the attempt, count the use; the caller commits, then releases.

    ``remote``: the terms of a consent held at another (home) node, whose artefact and status
    were verified and whose use was already counted there; otherwise the consent is this
    node's and its use is counted here, exactly. ``refused``: a refusal found before the
    transaction (a peer's answer), logged as such. ``forwarding``: the certificates are held
    at another node; this node checks and logs the request (outcome ``forwarded``) only.
    """
    item = get_item(req.item_code)  # malformed or unknown codes are refused before logging
    classify_subject_id(req.subject_id)
    now = int(node.clock.now())
    pseudonym = subject_pseudonym(node, req.subject_id)
    digest = request_digest({"client": requester.grantee, "subject_id": req.subject_id,
                             "item_code": req.item_code, "consent_id": req.consent_id})

    def log(outcome: str, reason: str | None, certificates: str | None = None) -> None:
        log_event(session, node, Event(
            kind=requester.kind, actor=requester.grantee, outcome=outcome, subject=pseudonym,
            item=item.national_item, certificate=certificates, consent=req.consent_id[:64],
            reason=reason, request_sha256=digest))

    def deny(reason: str, detail: str) -> Decision:
        log("denied", reason)
        return Decision(False, reason, detail)

    if refused is not None:
        return deny(*refused)
    # 1. A client of this node may use this item at all.
    if requester.client_id is not None and item.national_item not in _client_items(
            session, requester.client_id):
        return deny("item-not-allowed", f"client {requester.client_id} may not use item "
                                        f"{item.national_item}")
    # 2. A consent by this subject, to this client, for this purpose, covering every type.
    needs = {r.certificate_type: set(r.claims) for r in item.requirements}
    terms = remote if remote is not None else ConsentTerms.load(session, node, req.consent_id)
    refusal = _consent_refusal(terms, pseudonym, requester.grantee, item.national_item,
                               set(needs), now)
    if refusal is not None:
        return deny(*refusal)
    assert terms is not None
    if forwarding:
        log("forwarded", None)
        return Decision(True, None, "forwarded")
    # 3. A current, valid certificate of every required type.
    releases = []
    for ctype, claims in needs.items():
        found = _current_certificate(session, req.subject_id, ctype, now)
        if isinstance(found, str):
            return deny(found, f"no valid {ctype} for this subject ({found})")
        disclose = frozenset(claims & set(terms.scope[ctype])) | {"sub"}
        releases.append(Release(ctype, found.id, found.credential, disclose))
    # 4. Count the use exactly: the conditional update is the arbiter under concurrency.
    if remote is None:
        counted = session.connection().execute(
            _COUNT_USE, {"consent_id": terms.id, "now": now})
        if counted.rowcount != 1:
            now_status = session.connection().execute(
                _CONSENT_STATUS, {"consent_id": terms.id}).scalar()
            if now_status != "active":
                return deny("consent-revoked", "the consent has been revoked")
            return deny("consent-exhausted", "the consent has no uses left")
    certificates = " ".join(sorted(r.certificate_id for r in releases))
    log("granted", None, certificates)
    return Decision(True, None, "granted", tuple(releases))


def release(node: Node, decision: Decision, ledger_index: int) -> PullResult:
    """The minimal presentations and the receipt; call only after the entry is committed."""
    return PullResult(presentations(decision), receipt(node, ledger_index), ledger_index)


def presentations(decision: Decision) -> list[dict[str, str]]:
    """The minimal SD-JWT presentations a granted decision releases."""
    assert decision.granted
    return [{"type": r.type, "credential": present(r.credential, r.disclose)}
            for r in decision.releases]
