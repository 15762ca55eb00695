"""Cross-province pulls (DESIGN.md §6).

Three roles, any of which may coincide: the *requesting* node R (the bank's), the subject's
*home* node M (its consents and use counts) and the *holding* node H (its certificates).

* R authenticates the bank, fetches the consent artefact from M, verifies its signature and
  status, logs the request (outcome ``forwarded``), and sends a signed request to H.
* H verifies the peer, re-checks the consent (locally if H is M; otherwise the artefact, its
  status at M, and a use counted at M by a signed call), logs the release, and answers with
  the minimal presentation and its receipt.
* M counts each use exactly once (idempotent by request id) and logs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from exchange.catalog.service import get_item
from exchange.clients.model import SCOPE_PULL, Principal
from exchange.clients.service import require_scope
from exchange.errors import InvalidInput, NotFound, VerificationFailed
from exchange.federation.consent import consent_status, verify_artefact
from exchange.federation.messages import PeerRefused, PeerRequest, call_peer
from exchange.federation.routing import home_province, parse_grantee
from exchange.federation.status_cache import StatusCache
from exchange.identifiers import classify_subject_id
from exchange.ledger.leaf import Event
from exchange.ledger.service import log_event, request_digest, subject_pseudonym
from exchange.node import Node
from exchange.persistence.models import Certificate, Consent, FederationRequest, PeerReceipt
from exchange.pull.service import ConsentTerms, Decision, PullRequest, Release, Requester

PULL_PATH = "/v1/federation/pull"
CONSENT_PATH = "/v1/federation/consent"
USE_PATH = "/v1/federation/consent-use"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")
_STATUS = StatusCache()


def _str(body: Mapping[str, Any], key: str, max_len: int = 200) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise InvalidInput(f"field {key!r} must be a non-empty string", code="invalid-request")
    return v


def _request_id(body: Mapping[str, Any]) -> str:
    rid = _str(body, "request_id", 64)
    if not _REQUEST_ID.fullmatch(rid):
        raise InvalidInput("request_id must be 8-64 characters [A-Za-z0-9_.:-]",
                           code="invalid-request")
    return rid


@dataclass(frozen=True, slots=True)
class Prepared:
    """What was learnt before the transaction: the consent's terms, or why it fails."""

    requester: Requester
    req: PullRequest
    remote: ConsentTerms | None = None
    refused: tuple[str, str] | None = None
    forwarding: bool = False
    holder: str = ""
    artefact: str | None = None


def _check_remote_consent(node: Node, home: str, artefact: str, grantee: str,
                          national_item: str, subject: str) -> ConsentTerms | tuple[str, str]:
    """Verify an artefact from ``home`` and its status there; terms or a refusal."""
    try:
        art = verify_artefact(node, artefact, home)
    except VerificationFailed as e:
        return ("consent-invalid", f"the consent artefact does not verify: {e.detail}")
    t = art.terms
    if t.subject != subject:
        return ("consent-other-subject", "the consent was granted by another subject")
    if t.grantee != grantee:
        return ("consent-other-grantee", "the consent was granted to another relying party")
    if t.national_item != national_item:
        return ("consent-wrong-item", "the consent is for another item (purpose)")
    if consent_status(node, _STATUS, home, art) != 0:
        return ("consent-revoked", "the consent has been revoked at its home node")
    return t


# -- the requesting node -------------------------------------------------------------------


def prepare_pull(  # noqa: PLR0911  one return per routing case
    node: Node, principal: Principal, req: PullRequest, holder: str | None
) -> Prepared:
    """R's network work before its transaction: route, fetch and check a remote consent."""
    require_scope(principal, SCOPE_PULL)
    item = get_item(req.item_code)
    classify_subject_id(req.subject_id)
    me = node.settings.node
    home = home_province(req.subject_id)
    holds = holder or home
    grantee = principal.client_id if home == me else f"{me}:{principal.client_id}"
    requester = Requester(grantee, principal.client_id)
    if home == me and holds == me:
        return Prepared(requester, req)
    if home == me:
        # The consent is here; the certificates are elsewhere: check here, forward the artefact.
        consent = _local_consent(node, req.consent_id)
        return Prepared(requester, req, forwarding=True, holder=holds,
                        artefact=consent.artefact if consent else None)
    try:
        artefact = str(call_peer(node, home, CONSENT_PATH, {"consent_id": req.consent_id,
                                                            "grantee": grantee})["artefact"])
    except PeerRefused:
        return Prepared(requester, req, refused=("consent-not-found", "no such consent at the "
                                                 "subject's home node"))
    checked = _check_remote_consent(node, home, artefact, grantee, item.national_item,
                                    subject_pseudonym(node, req.subject_id))
    if isinstance(checked, tuple):
        return Prepared(requester, req, refused=checked)
    if holds == me:
        used = _use_at_home(node, home, checked, req, grantee)
        if used is not None:
            return Prepared(requester, req, refused=used)
        return Prepared(requester, req, remote=checked)
    return Prepared(requester, req, remote=checked, forwarding=True, holder=holds,
                    artefact=artefact)


def _local_consent(node: Node, consent_id: str) -> Consent | None:
    with node.reads() as session:
        return session.get(Consent, consent_id)


def _use_at_home(node: Node, home: str, terms: ConsentTerms, req: PullRequest,
                 grantee: str, request_id: str | None = None) -> tuple[str, str] | None:
    """Count one use at the home node; None if granted, else (reason, detail)."""
    answer = call_peer(node, home, USE_PATH, {
        "request_id": request_id or request_digest({"c": terms.id, "r": req.consent_id,
                                                    "g": grantee, "t": node.clock.now()})[:32],
        "consent_id": terms.id, "grantee": grantee, "purpose": terms.national_item,
        "subject": terms.subject})
    if answer.get("granted") is True:
        return None
    return (str(answer.get("reason") or "consent-denied"), str(answer.get("detail") or "denied"))


def forward(node: Node, prepared: Prepared, request_id: str, own_receipt: str,
            own_index: int) -> dict[str, Any]:
    """Send the checked, logged request to the holding node; its answer."""
    req = prepared.req
    return call_peer(node, prepared.holder, PULL_PATH, {
        "request_id": request_id, "client": f"{node.settings.node}:{prepared.requester.client_id}",
        "subject_id": req.subject_id, "item_code": req.item_code, "consent_id": req.consent_id,
        "artefact": prepared.artefact, "requester_index": own_index,
        "requester_receipt": own_receipt})


def log_outcome(session: Session, node: Node, prepared: Prepared, outcome: str,
                reason: str) -> None:
    """A second entry at R when the forwarded request failed or was refused by a peer."""
    req = prepared.req
    log_event(session, node, Event(
        kind="pull", actor=prepared.requester.grantee, outcome=outcome,
        subject=subject_pseudonym(node, req.subject_id), item=get_item(req.item_code).national_item,
        consent=req.consent_id[:64], reason=reason[:200],
        request_sha256=request_digest({"client": prepared.requester.grantee,
                                       "subject_id": req.subject_id, "item_code": req.item_code,
                                       "consent_id": req.consent_id})))


# -- the home node -------------------------------------------------------------------------


def serve_consent(session: Session, node: Node, peer: PeerRequest) -> dict[str, Any]:
    """A consent artefact, only to the node whose client the consent names."""
    consent = session.get(Consent, _str(peer.body, "consent_id", 64))
    if consent is None or parse_grantee(consent.grantee, node.settings.node)[0] != peer.province:
        raise NotFound("no such consent for a client of your node", code="consent-not-found")
    return {"artefact": consent.artefact}


def serve_consent_use(session: Session, node: Node, peer: PeerRequest) -> dict[str, Any]:
    """Count one use of a consent held here, exactly once per request id; logged."""
    b = peer.body
    key = f"use:{peer.province}:{_request_id(b)}"
    done = session.get(FederationRequest, key)
    if done is not None:
        return dict(done.response)
    now = int(node.clock.now())
    consent = session.get(Consent, _str(b, "consent_id", 64))
    grantee, purpose = _str(b, "grantee", 80), _str(b, "purpose", 8)
    reason: str | None = None
    if consent is None:
        reason = "consent-not-found"
    elif consent.grantee != grantee or consent.national_item != purpose or \
            subject_pseudonym(node, consent.subject_id) != b.get("subject"):
        reason = "consent-mismatch"
    else:
        counted = session.execute(
            update(Consent).where(Consent.id == consent.id, Consent.status == "active",
                                  Consent.uses < Consent.max_uses, Consent.valid_until > now,
                                  Consent.valid_from <= now)
            .values(uses=Consent.uses + 1))
        if getattr(counted, "rowcount", 0) != 1:
            session.refresh(consent)
            reason = "consent-revoked" if consent.status != "active" else (
                "consent-exhausted" if consent.uses >= consent.max_uses else "consent-expired")
    log_event(session, node, Event(
        kind="federation.pull", actor=grantee, outcome="denied" if reason else "granted",
        subject=subject_pseudonym(node, consent.subject_id) if consent else None, item=purpose,
        consent=b["consent_id"][:64], reason=reason,
        request_sha256=request_digest({"peer": peer.province,
                                       **{k: str(v) for k, v in b.items()}})))
    answer = {"granted": reason is None, "reason": reason,
              "detail": "use counted" if reason is None else reason}
    session.add(FederationRequest(id=key, response=answer, created_at=now))
    return answer


# -- the holding node ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HolderCall:
    key: str
    prepared: Prepared
    previous: dict[str, Any] | None
    requester_province: str = ""
    requester_receipt: str | None = None


def holder_key(peer: PeerRequest) -> str:
    """The idempotency key of a holding-node request."""
    return f"pull:{peer.province}:{_request_id(peer.body)}"


def prepare_holder(node: Node, peer: PeerRequest,
                   previous: Mapping[str, Any] | None) -> HolderCall:
    """H's checks before deciding: the peer speaks for its own client; remote consent work.

    ``previous``: the stored answer to the same request id, if any (a retry)."""
    b = peer.body
    receipt = b.get("requester_receipt")
    their_receipt = receipt if isinstance(receipt, str) and len(receipt) < 20_000 else None
    client = _str(b, "client", 80)
    province, _ = parse_grantee(client, node.settings.node)
    if province != peer.province:
        raise InvalidInput("a node may only speak for its own clients", code="client-not-yours")
    key = holder_key(peer)
    req = PullRequest(_str(b, "subject_id", 18), _str(b, "item_code", 33),
                      _str(b, "consent_id", 64))
    requester = Requester(client, None, kind="federation.pull")

    def made(prepared: Prepared, previous_answer: dict[str, Any] | None) -> HolderCall:
        return HolderCall(key, prepared, previous_answer, peer.province, their_receipt)

    if previous is not None:
        return made(Prepared(requester, req), dict(previous))
    home = home_province(req.subject_id)
    if home == node.settings.node:
        return made(Prepared(requester, req), None)
    item = get_item(req.item_code)
    artefact = b.get("artefact")
    if not isinstance(artefact, str):
        return made(Prepared(requester, req, refused=(
            "consent-invalid", "no consent artefact came with the request")), None)
    checked = _check_remote_consent(node, home, artefact, client, item.national_item,
                                    subject_pseudonym(node, req.subject_id))
    if isinstance(checked, tuple):
        return made(Prepared(requester, req, refused=checked), None)
    used = _use_at_home(node, home, checked, req, client, request_id=_request_id(b))
    if used is not None:
        return made(Prepared(requester, req, refused=used), None)
    return made(Prepared(requester, req, remote=checked), None)


def remember(node: Node, call: HolderCall, decision: Decision, index: int) -> None:
    """Keep H's answer so that a retry with the same request id changes nothing, and the
    requesting node's receipt so the subject's access log shows both."""
    key = call.key
    response = {"granted": decision.granted, "reason": decision.reason,
                "detail": decision.detail, "ledger_index": index,
                "releases": [{"type": r.type, "certificate_id": r.certificate_id,
                              "disclose": sorted(r.disclose)} for r in decision.releases]}
    try:
        with node.sessions.begin() as session:
            session.add(FederationRequest(id=key, response=response,
                                          created_at=int(node.clock.now())))
            if call.requester_receipt:
                session.add(PeerReceipt(ledger_index=index, province=call.requester_province,
                                        receipt=call.requester_receipt))
    except IntegrityError:  # a concurrent retry stored its answer first; keep that one
        return


def replay(node: Node, previous: Mapping[str, Any]) -> tuple[Decision, int]:
    """The stored decision of an already answered request id."""
    releases = []
    with node.reads() as session:
        for r in previous.get("releases", []):
            cert = session.get(Certificate, r["certificate_id"])
            if cert is not None:
                releases.append(Release(r["type"], cert.id, cert.credential,
                                        frozenset(r["disclose"])))
    return (Decision(bool(previous["granted"]), previous.get("reason"),
                     str(previous.get("detail", "")), tuple(releases)),
            int(previous["ledger_index"]))
