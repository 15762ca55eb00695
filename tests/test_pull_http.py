"""The exchange's main job over HTTP: consent → pull → verify, denials, exact use counts."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from jwcrypto.jwk import JWK
from sd_jwt.verifier import SDJWTVerifier
from sqlalchemy import func, select

from exchange.catalog.service import get_item, list_items
from exchange.ledger.note import Verifier
from exchange.ledger.receipt import verify_receipt
from exchange.persistence.models import Consent, LedgerEntry
from tests.helpers import (
    BUSINESS_LICENSE,
    access_token,
    add_agency,
    add_client,
    add_idp,
    bearer,
    new_uscc,
)

EXTRA = {"enterprise_type": "有限责任公司", "registration_authority": "上海市徐汇区市场监督管理局",
         "operating_until": "2045-06-01"}


def bank_item() -> Any:
    return next(i for i in list_items()
                if [r.certificate_type for r in i.requirements] == ["business-license"]
                and "开户" in i.name)


def other_business_item() -> Any:
    bank = bank_item()
    return next(i for i in list_items() if i.national_item != bank.national_item
                and [r.certificate_type for r in i.requirements] == ["business-license"])


class World:
    def __init__(self, http: Any, node: Any) -> None:
        self.http, self.node = http, node
        self.item = bank_item()
        self.other_item = other_business_item()
        self.agency = add_agency(node, ["business-license"])
        self.agency_token = access_token(http, node, self.agency)
        self.bank = add_client(node, "bank-sh-1", "bank",
                               items=(self.item.basic_code, self.other_item.basic_code))
        self.bank_token = access_token(http, node, self.bank)
        self.idp = add_idp(node)
        self.enterprise = new_uscc("enterprise-e")
        self.cert_id = self.issue(self.enterprise)

    def issue(self, subject: str) -> str:
        r = self.http.post("/v1/certificates", headers=bearer(self.agency_token), json={
            "type": "business-license", "subject_id": subject,
            "claims": {**BUSINESS_LICENSE, **EXTRA}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def subject_headers(self, subject: str | None = None) -> dict[str, str]:
        return bearer(self.idp.token(self.node, subject or self.enterprise))

    def grant(self, subject: str | None = None, **over: Any) -> dict[str, Any]:
        body = {"grantee": self.bank.client_id, "item_code": self.item.basic_code,
                "valid_until": _iso(self.node.clock.now() + 30 * 86400), "max_uses": 5, **over}
        r = self.http.post("/v1/consents", headers=self.subject_headers(subject), json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def pull(self, consent_id: str, subject: str | None = None, item_code: str | None = None,
             token: str | None = None) -> Any:
        return self.http.post("/v1/pull", headers=bearer(token or self.bank_token), json={
            "subject_id": subject or self.enterprise,
            "item_code": item_code or self.item.basic_code, "consent_id": consent_id})

    def ledger_leaf(self, index: int) -> dict[str, Any]:
        with self.node.sessions() as s:
            raw = s.get(LedgerEntry, index).leaf
        return json.loads(raw)  # type: ignore[no-any-return]

    def uses(self, consent_id: str) -> int:
        with self.node.sessions() as s:
            return int(s.get(Consent, consent_id).uses)


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


@pytest.fixture
def world(http, node) -> World:  # type: ignore[no-untyped-def]
    return World(http, node)


def test_bank_account_story_end_to_end(world: World) -> None:
    w, http = world, world.http
    consent = w.grant()
    assert consent["scope"] == {"business-license": sorted(
        r for r in w.item.requirements[0].claims)}
    r = w.pull(consent["id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["type"] for c in body["credentials"]] == ["business-license"]
    pres = body["credentials"][0]["credential"]
    # The bank verifies the presentation with the reference SD-JWT implementation and the
    # issuer's published keys, and sees exactly the permitted claims.
    iss = json.loads(base64.urlsafe_b64decode(pres.split(".")[1] + "=="))["iss"]
    meta = http.get("/.well-known/jwt-vc-issuer" + iss.removeprefix(w.node.base_url)).json()

    def key(_iss: str, header: dict[str, Any]) -> JWK:
        return JWK(**next(k for k in meta["jwks"]["keys"] if k["kid"] == header["kid"]))

    payload = SDJWTVerifier(pres, key).get_verified_payload()
    disclosed = {k for k in payload if k in BUSINESS_LICENSE or k in EXTRA or k == "sub"}
    assert disclosed == set(w.item.requirements[0].claims) | {"sub"}
    assert payload["sub"] == w.enterprise
    for k in EXTRA:
        assert k not in payload and k not in pres
    # The receipt proves the access is in the signed log.
    verifier = Verifier.from_vkey(http.get("/v1/ledger/vkey").text.strip())
    with w.node.sessions() as s:
        leaf = bytes(s.get(LedgerEntry, body["ledger_index"]).leaf)
    verified = verify_receipt(body["receipt"], verifier=verifier, leaf_bytes=leaf)
    assert verified.index == body["ledger_index"]
    entry = json.loads(leaf)
    assert entry["kind"] == "pull" and entry["outcome"] == "granted"
    assert entry["actor"] == w.bank.client_id and entry["certificate"] == w.cert_id
    assert w.enterprise not in leaf.decode()
    assert w.uses(consent["id"]) == 1
    # The enterprise reads its access log: who, when, which item, with receipts.
    log = http.get("/v1/me/access-log", headers=w.subject_headers()).json()["entries"]
    pull_entry = next(e for e in log if e["kind"] == "pull")
    assert pull_entry["actor_name"] == w.bank.client_id and pull_entry["outcome"] == "granted"
    assert pull_entry["item"] == w.item.national_item
    # Walking prev_subject from the newest entry reaches every entry about the subject.
    indices = [e["index"] for e in log]
    chain, cur = [], log[0]
    by_index = {e["index"]: e for e in log}
    while cur is not None:
        chain.append(cur["index"])
        cur = by_index.get(cur["prev_subject"]) if cur["prev_subject"] is not None else None
    assert chain == indices
    for e in log:
        verify_receipt(e["receipt"], verifier=verifier, leaf_bytes=base64.b64decode(e["leaf"]))
    certs = http.get("/v1/me/certificates", headers=w.subject_headers()).json()["certificates"]
    assert [c["id"] for c in certs] == [w.cert_id]


def test_narrower_consent_discloses_the_intersection(world: World) -> None:
    consent = world.grant(claims={"business-license": ["name", "address"]})
    r = world.pull(consent["id"])
    assert r.status_code == 200, r.text
    pres = r.json()["credentials"][0]["credential"]
    v = world.http.post("/v1/verify", json={"credential": pres}).json()
    assert v["valid"] is True
    assert set(v["disclosed"]) == {"sub", "name", "address"}


def test_consent_refuses_claims_the_item_does_not_need(world: World) -> None:
    r = world.http.post("/v1/consents", headers=world.subject_headers(), json={
        "grantee": world.bank.client_id, "item_code": world.item.basic_code,
        "valid_until": _iso(world.node.clock.now() + 86400), "max_uses": 1,
        "claims": {"business-license": ["name", "enterprise_type"]}})
    assert r.status_code == 400
    assert r.json()["type"] == "urn:certex:problem:claim-not-needed"
    r = world.http.post("/v1/consents", headers=world.subject_headers(), json={
        "grantee": world.bank.client_id, "item_code": world.item.basic_code,
        "valid_until": _iso(world.node.clock.now() + 400 * 86400), "max_uses": 1})
    assert r.status_code == 400 and r.json()["type"] == "urn:certex:problem:bad-validity"


def _denied(world: World, r: Any, status: int, reason: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["type"] == f"urn:certex:problem:{reason}"
    assert "credentials" not in p and "credential" not in r.text
    leaf = world.ledger_leaf(p["ledger_index"])
    assert leaf["kind"] == "pull" and leaf["outcome"] == "denied" and leaf["reason"] == reason
    assert leaf["certificate"] is None
    return p


def test_denials_are_logged_and_change_nothing(world: World) -> None:
    w = world
    consent = w.grant()
    cid = consent["id"]
    _denied(w, w.pull("cst_doesnotexist"), 404, "consent-not-found")
    # Another subject's consent used for this subject, and this consent for another subject.
    other = new_uscc("other-enterprise")
    w.issue(other)
    other_consent = w.grant(subject=other)
    _denied(w, w.pull(other_consent["id"]), 403, "consent-other-subject")
    _denied(w, w.pull(cid, subject=other), 403, "consent-other-subject")
    # Another bank using this bank's consent.
    bank2 = add_client(w.node, "bank-sh-2", "bank", items=(w.item.basic_code,))
    _denied(w, w.pull(cid, token=access_token(w.http, w.node, bank2)), 403, "consent-other-grantee")
    # The right bank, another item (purpose) it may use, under this consent.
    _denied(w, w.pull(cid, item_code=w.other_item.basic_code), 403, "consent-wrong-item")
    # An item this bank may not use at all.
    unlisted = next(i for i in list_items() if i.national_item not in
                    {w.item.national_item, w.other_item.national_item})
    _denied(w, w.pull(cid, item_code=unlisted.basic_code), 403, "item-not-allowed")
    assert w.uses(cid) == 0
    # Suspended, then revoked certificate.
    for status, reason in (("suspended", "certificate-suspended"), ("revoked", "certificate-revoked")):
        r = w.http.post(f"/v1/certificates/{w.cert_id}/status", headers=bearer(w.agency_token),
                        json={"status": status, "reason": "test"})
        assert r.status_code == 200
        _denied(w, w.pull(cid), 403, reason)
    assert w.uses(cid) == 0


def test_revoked_expired_and_exhausted_consents(world: World) -> None:
    w = world
    c1 = w.grant(max_uses=2)
    assert w.pull(c1["id"]).status_code == 200
    assert w.pull(c1["id"]).status_code == 200
    _denied(w, w.pull(c1["id"]), 403, "consent-exhausted")
    assert w.uses(c1["id"]) == 2
    c2 = w.grant()
    r = w.http.delete(f"/v1/consents/{c2['id']}", headers=w.subject_headers())
    assert r.status_code == 204
    _denied(w, w.pull(c2["id"]), 403, "consent-revoked")
    # The consent status list says revoked too.
    uri = c2["status_list"]["uri"]
    token = w.http.get(uri.removeprefix(w.node.base_url)).text
    from exchange.status.codec import StatusList

    p = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert StatusList.decode(p["status_list"]["lst"], p["status_list"]["bits"]).get(
        c2["status_list"]["idx"]) == 1
    c3 = w.grant(valid_until=_iso(w.node.clock.now() + 3600))
    w.node.clock.advance(3601)
    w.bank_token = access_token(w.http, w.node, w.bank)
    _denied(w, w.pull(c3["id"]), 403, "consent-expired")


def test_subjects_see_and_revoke_only_their_own(world: World) -> None:
    w = world
    mine = w.grant()
    other = new_uscc("someone-else")
    listing = w.http.get("/v1/consents", headers=w.subject_headers(other)).json()["consents"]
    assert listing == []
    r = w.http.delete(f"/v1/consents/{mine['id']}", headers=w.subject_headers(other))
    assert r.status_code == 404
    assert [c["id"] for c in w.http.get("/v1/consents", headers=w.subject_headers()).json()[
        "consents"]] == [mine["id"]]
    assert w.http.get("/v1/me/access-log", headers=w.subject_headers(other)).json()["entries"] == []


def test_access_log_pages_past_another_pseudonym_with_the_same_prefix(world: World) -> None:
    """Entries are found by the first 64 bits of the subject's pseudonym, then the subject in
    full (store.subject_entries). Here another pseudonym with the same first 16 hex digits
    has runs of entries longer than the reader's page of index rows (64) before, between
    and after the enterprise's: paging through ``GET /v1/me/access-log`` two at a time
    still returns exactly the enterprise's entries, newest first, each page below the
    previous one, and none of the other's."""
    from exchange.ledger.leaf import Event, SubjectPseudonym
    from exchange.ledger.service import subject_pseudonym
    from exchange.ledger.writer import LedgerWriter

    w = world
    mine = subject_pseudonym(w.node, w.enterprise)
    twin = SubjectPseudonym(mine[:16] + ("0" * 48 if mine[16:] != "0" * 48 else "1" * 48))
    writer = w.node.ledger
    assert isinstance(writer, LedgerWriter)

    def twins(n: int) -> list[int]:
        return writer.append([Event(kind="pull", actor="twin-prefix", outcome="granted",
                                    subject=twin) for _ in range(n)])

    twins(70)
    consent = w.grant()
    twins(130)
    for _ in range(3):
        assert w.pull(consent["id"]).status_code == 200
        twins(65)
    with w.node.sessions() as s:
        expected = list(s.scalars(select(LedgerEntry.idx).where(LedgerEntry.subject == mine)
                                  .order_by(LedgerEntry.idx.desc())))
        twin_count = s.scalar(select(func.count()).where(LedgerEntry.subject == twin))
    # The issuance, the grant and three pulls; the other pseudonym's entries around them.
    assert len(expected) == 5 and twin_count == 70 + 130 + 3 * 65
    pages: list[list[dict[str, Any]]] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({} if before is None else {"before": before})}
        r = w.http.get("/v1/me/access-log", params=params, headers=w.subject_headers())
        assert r.status_code == 200, r.text
        page = r.json()["entries"]
        if not page:
            break
        assert len(page) <= 2
        assert before is None or all(e["index"] < before for e in page)
        pages.append(page)
        before = page[-1]["index"]
    got = [e["index"] for p in pages for e in p]
    assert got == expected
    assert all(e["actor"] != "twin-prefix" for p in pages for e in p)
    verifier = Verifier.from_vkey(w.http.get("/v1/ledger/vkey").text.strip())
    for e in (e for p in pages for e in p):
        leaf = base64.b64decode(e["leaf"])
        assert json.loads(leaf)["subject"] == mine
        verify_receipt(e["receipt"], verifier=verifier, leaf_bytes=leaf)


def test_subject_token_attacks(world: World, node) -> None:  # type: ignore[no-untyped-def]
    w = world
    from exchange.crypto.jws import SigningKey, sign_jwt

    now = int(node.clock.now())
    base = {"iss": w.idp.issuer, "sub": w.enterprise, "aud": node.base_url, "iat": now,
            "exp": now + 600}
    forged = sign_jwt(base, SigningKey(kid=w.idp.key.kid, private_key=SigningKey.generate().private_key),
                      typ="JWT")
    unknown = sign_jwt({**base, "iss": "https://evil.test"}, SigningKey.generate(), typ="JWT")
    wrong_aud = w.idp.token(node, w.enterprise, aud="https://other-node.test")
    expired = w.idp.token(node, w.enterprise, exp=now - 60)
    bad_sub = w.idp.token(node, "91350100M000100Y44")
    for token in (forged, unknown, wrong_aud, expired, bad_sub, w.bank_token, "x.y.z"):
        r = w.http.get("/v1/consents", headers=bearer(token))
        assert r.status_code == 401, token
        assert r.headers["content-type"].startswith("application/problem+json")
    # The dev IdP does not exist outside dev mode.
    from exchange.errors import Forbidden
    from exchange.subjects.service import issue_dev_token

    with node.sessions() as s, pytest.raises(Forbidden):
        issue_dev_token(s, node, w.enterprise)


def test_consent_artefact_is_a_signed_consent_jwt(world: World) -> None:
    w = world
    consent = w.grant()
    art = consent["artefact"]
    jwks = w.http.get("/.well-known/jwks.json").json()
    header = json.loads(base64.urlsafe_b64decode(art.split(".")[0] + "=="))
    assert header["typ"] == "consent+jwt" and header["alg"] == "EdDSA"
    from jwcrypto.jws import JWS

    jws = JWS()
    jws.deserialize(art)
    jws.verify(JWK(**next(k for k in jwks["keys"] if k["kid"] == header["kid"])), alg="EdDSA")
    claims = json.loads(jws.payload)
    assert claims["grantee"] == w.bank.client_id
    assert claims["purpose"] == w.item.national_item
    assert claims["scope"] == consent["scope"]
    assert claims["max_uses"] == 5 and claims["exp"] == consent["valid_until"]
    assert w.enterprise not in art and claims["sub"] != w.enterprise
    assert set(claims["status"]["status_list"]) == {"idx", "uri"}


def test_unknown_or_malformed_item_codes(world: World) -> None:
    consent = world.grant()
    r = world.pull(consent["id"], item_code="not-a-code")
    assert r.status_code == 400
    assert get_item(world.item.basic_code).national_item == world.item.national_item


def _count_pulls(node) -> int:  # type: ignore[no-untyped-def]
    with node.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(LedgerEntry)
                            .where(LedgerEntry.kind == "pull")) or 0)


def test_max_uses_exact_under_concurrency(world: World, live_server: str) -> None:
    import concurrent.futures

    import httpx

    w = world
    consent = w.grant(max_uses=3)
    before = _count_pulls(w.node)
    body = {"subject_id": w.enterprise, "item_code": w.item.basic_code, "consent_id": consent["id"]}

    def one(_: int) -> int:
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return c.post("/v1/pull", headers=bearer(w.bank_token), json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(one, range(50)))
    assert codes.count(200) == 3, codes
    assert codes.count(403) == 47, codes
    assert w.uses(consent["id"]) == 3
    assert _count_pulls(w.node) - before == 50


def test_revoke_racing_pulls(world: World, live_server: str) -> None:
    import concurrent.futures

    import httpx

    w = world
    consent = w.grant(max_uses=1000)
    body = {"subject_id": w.enterprise, "item_code": w.item.basic_code, "consent_id": consent["id"]}
    headers = w.subject_headers()

    def pull(_: int) -> int:
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return c.post("/v1/pull", headers=bearer(w.bank_token), json=body).status_code

    def revoke() -> int:
        with httpx.Client(base_url=live_server, timeout=60) as c:
            return c.delete(f"/v1/consents/{consent['id']}", headers=headers).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        futures = [pool.submit(pull, i) for i in range(20)]
        futures.insert(10, pool.submit(revoke))
        results = [f.result() for f in futures]
    assert 204 in results
    # In the ledger, no grant follows the revocation.
    with w.node.sessions() as s:
        rows = s.execute(select(LedgerEntry.idx, LedgerEntry.leaf).order_by(LedgerEntry.idx)).all()
    events = [(i, json.loads(leaf)) for i, leaf in rows]
    revoked_at = next(i for i, e in events if e["kind"] == "consent.revoked")
    late_grants = [i for i, e in events if e["kind"] == "pull" and e["outcome"] == "granted"
                   and i > revoked_at]
    assert late_grants == []
    # And after the revoke returned, every pull is denied.
    assert pull(0) == 403


def test_ledger_failure_means_503_and_no_credential(world: World) -> None:
    """Invariant 1: when the ledger cannot commit, nothing is released."""
    from sqlalchemy import text

    w = world
    consent = w.grant()
    assert w.pull(consent["id"]).status_code == 200
    # Storage no longer matches what the writer signed: it must halt, not append.
    with w.node.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_head SET last_hash = :h"), {"h": b"\x01" * 32})
    r = w.pull(consent["id"])
    assert r.status_code == 503, r.text
    assert r.json()["type"] == "urn:certex:problem:ledger-unavailable"
    assert "credential" not in r.text and "receipt" not in r.json()
    assert w.node.ledger is not None and w.node.ledger.halted
    # Everything that needs the ledger now fails closed, issuance included.
    r = w.http.post("/v1/certificates", headers=bearer(w.agency_token), json={
        "type": "business-license", "subject_id": new_uscc("late"), "claims": BUSINESS_LICENSE})
    assert r.status_code == 503


def test_stopped_writer_means_503(world: World) -> None:
    w = world
    consent = w.grant()
    assert w.node.ledger is not None
    w.node.ledger.stop()
    r = w.pull(consent["id"])
    assert r.status_code == 503
    assert "credential" not in r.text
