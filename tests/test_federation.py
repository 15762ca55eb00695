"""Cross-province exchange with real node processes on loopback, each with its own database.

Nodes: 44 (Guangdong), 50 (Chongqing), 31 (Shanghai). In the PostgreSQL run node 44 keeps
its data in PostgreSQL, the others in SQLite files.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url

from exchange.clients.agencies import register_agency
from exchange.clients.service import register_client
from exchange.clients.tools import (
    client_assertion,
    generate_client_jwk,
    signing_key_from_private_jwk,
)
from exchange.crypto.jws import SigningKey, sign_jwt
from exchange.devfed import LocalFederation
from exchange.federation.messages import HEADER, sign_request
from exchange.identifiers import generate_resident_id
from exchange.ledger.checkpoint import open_checkpoint
from exchange.ledger.note import Verifier
from exchange.ledger.receipt import verify_receipt
from exchange.node import Node
from exchange.subjects.service import add_identity_provider
from tests.conftest import BACKEND, PG_URL, _pg_admin
from tests.helpers import BUSINESS_LICENSE, new_uscc

BANK_ITEM = "002018001000"  # 企业银行开户: business-license only
HOUSING_ITEM = "000712001002"  # 二手房转移登记: property-certificate + resident-id
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

pytestmark = pytest.mark.slow


class Fed:
    def __init__(self, lf: LocalFederation) -> None:
        self.lf = lf
        self.keys: dict[str, SigningKey] = {}
        self.idp_key = SigningKey.generate()

    def url(self, p: str) -> str:
        return self.lf.nodes[p].base_url

    def node(self, p: str) -> Node:
        return Node.open(self.lf.settings(p), pool_size=2)

    def add_client(self, p: str, client_id: str, kind: str, items: tuple[str, ...] = ()) -> None:
        private, public = generate_client_jwk()
        n = self.node(p)
        try:
            with n.sessions.begin() as s:
                register_client(s, client_id=client_id, name=client_id, kind=kind, jwk=public,
                                items=items, now=time.time())
        finally:
            n.close()
        self.keys[f"{p}:{client_id}"] = signing_key_from_private_jwk(private)

    def add_agency(self, p: str, types: list[str]) -> str:
        private, public = generate_client_jwk()
        uscc = new_uscc(f"agency-{p}-{types}", region=f"{p}0000")
        n = self.node(p)
        try:
            with n.sessions.begin() as s:
                register_agency(s, n, uscc=uscc, name=f"{p} agency", types=types, jwk=public)
        finally:
            n.close()
        self.keys[f"{p}:{uscc}"] = signing_key_from_private_jwk(private)
        return uscc

    def trust_idp(self, p: str) -> None:
        n = self.node(p)
        try:
            with n.sessions.begin() as s:
                add_identity_provider(s, issuer="https://idp.gov.test",
                                      jwks={"keys": [self.idp_key.public_jwk()]}, now=time.time())
        finally:
            n.close()

    def token(self, p: str, client_id: str) -> str:
        a = client_assertion(self.keys[f"{p}:{client_id}"], client_id=client_id,
                             token_url=f"{self.url(p)}/oauth2/token", now=time.time())
        r = httpx.post(f"{self.url(p)}/oauth2/token", data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION,
            "client_assertion": a})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def subject(self, p: str, subject_id: str) -> dict[str, str]:
        now = int(time.time())
        t = sign_jwt({"iss": "https://idp.gov.test", "sub": subject_id, "aud": self.url(p),
                      "iat": now, "exp": now + 600}, self.idp_key, typ="JWT")
        return {"Authorization": f"Bearer {t}"}

    def issue(self, p: str, agency: str, ctype: str, subject: str, claims: dict[str, Any]) -> str:
        r = httpx.post(f"{self.url(p)}/v1/certificates",
                       headers={"Authorization": f"Bearer {self.token(p, agency)}"},
                       json={"type": ctype, "subject_id": subject, "claims": claims})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def grant(self, home: str, subject: str, grantee: str, item: str, **over: Any) -> str:
        until = datetime.fromtimestamp(time.time() + 86400, UTC).isoformat()
        r = httpx.post(f"{self.url(home)}/v1/consents", headers=self.subject(home, subject), json={
            "grantee": grantee, "item_code": item, "valid_until": until, "max_uses": 10, **over})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def pull(self, p: str, bank: str, subject: str, item: str, consent: str,
             **extra: Any) -> httpx.Response:
        return httpx.post(f"{self.url(p)}/v1/pull", timeout=30,
                          headers={"Authorization": f"Bearer {self.token(p, bank)}"},
                          json={"subject_id": subject, "item_code": item, "consent_id": consent,
                                **extra})

    def leaf(self, p: str, index: int) -> bytes:
        n = self.node(p)
        try:
            from exchange.ledger import service

            return service.entries(n, index, index + 1)[0][1]
        finally:
            n.close()

    def verifier(self, p: str) -> Verifier:
        return Verifier.from_vkey(httpx.get(f"{self.url(p)}/v1/ledger/vkey").text.strip())


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    root = tmp_path_factory.mktemp("federation")
    urls: dict[str, str] = {}
    pg_db = None
    if BACKEND == "postgres":
        pg_db = f"certex_fed_{uuid.uuid4().hex[:10]}"
        _pg_admin(f'CREATE DATABASE "{pg_db}"')
        urls["44"] = make_url(PG_URL).set(database=pg_db).render_as_string(hide_password=False)
    lf = LocalFederation(root, ("44", "50", "31"), database_urls=urls, dev=False)
    lf.setup()
    f = Fed(lf)
    f.gd_market = f.add_agency("44", ["business-license"])  # type: ignore[attr-defined]
    f.gd_land = f.add_agency("44", ["property-certificate", "resident-id"])  # type: ignore[attr-defined]
    f.add_client("50", "bank-cq-1", "bank", (BANK_ITEM, HOUSING_ITEM))
    f.add_client("50", "bank-cq-2", "bank", (BANK_ITEM,))
    for p in ("44", "31"):
        f.trust_idp(p)
    lf.start()
    try:
        yield f
    finally:
        lf.stop()
        if pg_db:
            _pg_admin(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')


def _enterprise(fed: Fed, tag: str) -> str:
    e = new_uscc(tag, region="440106")
    fed.issue("44", fed.gd_market, "business-license", e,  # type: ignore[attr-defined]
              {**BUSINESS_LICENSE, "enterprise_type": "有限责任公司"})
    return e


def _check_receipt(fed: Fed, p: str, receipt: str, index: int) -> None:
    verified = verify_receipt(receipt, verifier=fed.verifier(p), leaf_bytes=fed.leaf(p, index))
    assert verified.index == index
    cp = open_checkpoint(httpx.get(f"{fed.url(p)}/v1/ledger/checkpoint").text, fed.verifier(p))
    assert cp.size > index


def _receipt_index(receipt: str) -> int:
    line = next(x for x in receipt.splitlines() if x.startswith("index "))
    return int(line.split()[1])


def test_chongqing_bank_guangdong_enterprise(fed: Fed) -> None:
    e = _enterprise(fed, "gd-story")
    consent = fed.grant("44", e, "50:bank-cq-1", BANK_ITEM)
    r = fed.pull("50", "bank-cq-1", e, BANK_ITEM, consent)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["receipts"]) == {"50", "44"}
    assert body["receipt"] == body["receipts"]["50"]
    pres = body["credentials"][0]["credential"]
    # The bank verifies the presentation against the issuer at node 44.
    v = httpx.post(f"{fed.url('44')}/v1/verify", json={"credential": pres}).json()
    assert v["valid"] is True
    assert set(v["disclosed"]) == {"sub", *BUSINESS_LICENSE}
    assert "enterprise_type" not in v["disclosed"]
    # Both receipts verify against each node's own checkpoint, and both ledgers hold the entry.
    i50, i44 = body["ledger_index"], _receipt_index(body["receipts"]["44"])
    _check_receipt(fed, "50", body["receipts"]["50"], i50)
    _check_receipt(fed, "44", body["receipts"]["44"], i44)
    l50, l44 = json.loads(fed.leaf("50", i50)), json.loads(fed.leaf("44", i44))
    assert (l50["kind"], l50["outcome"], l50["actor"]) == ("pull", "forwarded", "50:bank-cq-1")
    assert (l44["kind"], l44["outcome"], l44["actor"]) == ("federation.pull", "granted",
                                                           "50:bank-cq-1")
    assert l50["subject"] == l44["subject"]  # the same pseudonym on every node
    # The enterprise sees the access at its home node.
    log = httpx.get(f"{fed.url('44')}/v1/me/access-log", headers=fed.subject("44", e)).json()
    seen = next(x for x in log["entries"] if x["index"] == i44)
    assert seen["kind"] == "federation.pull" and seen["outcome"] == "granted"
    # ... with both receipts: its home node's and the requesting node's.
    verify_receipt(seen["receipt"], verifier=fed.verifier("44"), leaf_bytes=fed.leaf("44", i44))
    assert seen["peer_receipts"] == {"50": body["receipts"]["50"]}


def test_three_nodes_home_holder_requester_all_different(fed: Fed) -> None:
    import random

    person = generate_resident_id(random.Random("sh-person"), region="310104")
    fed.issue("44", fed.gd_land, "property-certificate", person, {  # type: ignore[attr-defined]
        "certificate_number": "粤(2024)广州市不动产权第0012345号", "owner_name": "王五",
        "location": "广州市天河区", "unit_number": "440106001001GB00001F00010001",
        "right_type": "国有建设用地使用权/房屋所有权", "usage": "住宅", "area_m2": 89.5})
    fed.issue("44", fed.gd_land, "resident-id", person, {  # type: ignore[attr-defined]
        "name": "王五", "sex": "男", "ethnicity": "汉", "birth_date": "1985-05-05",
        "address": "上海市徐汇区", "issuing_authority": "上海市公安局徐汇分局"})
    consent = fed.grant("31", person, "50:bank-cq-1", HOUSING_ITEM)
    r = fed.pull("50", "bank-cq-1", person, HOUSING_ITEM, consent, holder="44")
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(c["type"] for c in body["credentials"]) == ["property-certificate",
                                                              "resident-id"]
    _check_receipt(fed, "50", body["receipts"]["50"], body["ledger_index"])
    _check_receipt(fed, "44", body["receipts"]["44"], _receipt_index(body["receipts"]["44"]))
    # The home node counted the use and logged it.
    n = fed.node("31")
    try:
        from exchange.persistence.models import Consent

        with n.sessions() as s:
            assert s.get(Consent, consent).uses == 1  # type: ignore[union-attr]
    finally:
        n.close()
    log = httpx.get(f"{fed.url('31')}/v1/me/access-log", headers=fed.subject("31", person)).json()
    assert any(x["kind"] == "federation.pull" and x["actor"] == "50:bank-cq-1"
               for x in log["entries"])


def test_revocation_at_home_stops_pulls_elsewhere(fed: Fed) -> None:
    e = _enterprise(fed, "gd-revoke")
    consent = fed.grant("44", e, "50:bank-cq-1", BANK_ITEM)
    assert fed.pull("50", "bank-cq-1", e, BANK_ITEM, consent).status_code == 200
    r = httpx.delete(f"{fed.url('44')}/v1/consents/{consent}", headers=fed.subject("44", e))
    assert r.status_code == 204
    # The holding node is the home node: it re-checks its own row, so this is immediate even
    # though node 50 may still hold a cached status list.
    r = fed.pull("50", "bank-cq-1", e, BANK_ITEM, consent)
    assert r.status_code == 403, r.text
    assert r.json()["type"].endswith(":consent-revoked")
    assert "credential" not in r.text
    assert isinstance(r.json()["ledger_index"], int)


def test_consent_for_another_bank_is_refused(fed: Fed) -> None:
    e = _enterprise(fed, "gd-other-bank")
    consent = fed.grant("44", e, "50:bank-cq-2", BANK_ITEM)
    r = fed.pull("50", "bank-cq-1", e, BANK_ITEM, consent)
    assert r.status_code == 403
    assert r.json()["type"].endswith(":consent-other-grantee")


def _raw_fed_call(fed: Fed, sender: str, target: str, body: dict[str, Any],
                  token: str | None = None) -> httpx.Response:
    raw = orjson.dumps(body)
    if token is None:
        n = fed.node(sender)
        try:
            token = sign_request(n, fed.url(target), raw)
        finally:
            n.close()
    return httpx.post(f"{fed.url(target)}/v1/federation/pull", content=raw,
                      headers={HEADER: token, "Content-Type": "application/json"})


def test_federation_request_attacks(fed: Fed) -> None:
    e = _enterprise(fed, "gd-attacks")
    consent = fed.grant("44", e, "50:bank-cq-1", BANK_ITEM)
    body = {"request_id": "attack-000001", "client": "50:bank-cq-1", "subject_id": e,
            "item_code": BANK_ITEM, "consent_id": consent, "requester_index": 0,
            "requester_receipt": "x"}
    raw = orjson.dumps(body)
    now = int(time.time())
    # An unlisted node (province 45 is not in the federation file).
    stranger = SigningKey.generate()
    claims = {"iss": "45", "aud": fed.url("44"), "iat": now, "exp": now + 30, "jti": "j1" * 8,
              "body_sha256": __import__("hashlib").sha256(raw).hexdigest()}
    r = _raw_fed_call(fed, "50", "44", body, token=sign_jwt(claims, stranger, typ="fed+jwt"))
    assert r.status_code == 403 and r.json()["type"].endswith(":unknown-peer")
    # A listed node's request with a bad signature (its kid, another key).
    n50 = fed.node("50")
    try:
        good = sign_request(n50, fed.url("44"), raw)
    finally:
        n50.close()
    kid = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))["kid"]
    forged = sign_jwt({**claims, "iss": "50"}, SigningKey(kid=kid,
                      private_key=stranger.private_key), typ="fed+jwt")
    r = _raw_fed_call(fed, "50", "44", body, token=forged)
    assert r.status_code == 401 and r.json()["type"].endswith(":bad-signature")
    # Expired.
    n50 = fed.node("50")
    try:
        key = None
        with n50.sessions() as s:
            key = n50.keys.current(s, "node:token")
    finally:
        n50.close()
    old = sign_jwt({**claims, "iss": "50", "iat": now - 600, "exp": now - 300}, key,
                   typ="fed+jwt")
    r = _raw_fed_call(fed, "50", "44", body, token=old)
    assert r.status_code == 401 and r.json()["type"].endswith(":expired")
    # A body that is not the signed one.
    r = httpx.post(f"{fed.url('44')}/v1/federation/pull",
                   content=orjson.dumps({**body, "client": "50:bank-cq-2"}),
                   headers={HEADER: good, "Content-Type": "application/json"})
    assert r.status_code == 401 and r.json()["type"].endswith(":body-mismatch")
    # Replayed: the first use is answered, the second refused.
    first = httpx.post(f"{fed.url('44')}/v1/federation/pull", content=raw,
                       headers={HEADER: good, "Content-Type": "application/json"})
    assert first.status_code == 200, first.text
    again = httpx.post(f"{fed.url('44')}/v1/federation/pull", content=raw,
                       headers={HEADER: good, "Content-Type": "application/json"})
    assert again.status_code == 401 and again.json()["type"].endswith(":replayed")
    # A node speaking for another node's client, and a node trying to release data under a
    # consent that names a different bank: the holding node re-checks and refuses.
    r = _raw_fed_call(fed, "31", "44", {**body, "request_id": "attack-000002"})
    assert r.status_code == 400 and r.json()["type"].endswith(":client-not-yours")
    other = fed.grant("44", e, "50:bank-cq-2", BANK_ITEM)
    r = _raw_fed_call(fed, "50", "44", {**body, "request_id": "attack-000003",
                                        "consent_id": other})
    assert r.status_code == 403 and r.json()["type"].endswith(":consent-other-grantee")
    assert "credential" not in r.text


def test_peer_killed_then_restarted(fed: Fed) -> None:
    e = _enterprise(fed, "gd-crash")
    consent = fed.grant("44", e, "50:bank-cq-1", BANK_ITEM)
    # Warm node 50's status cache is irrelevant here: the artefact fetch needs node 44 too.
    fed.lf.kill("44")
    try:
        t0 = time.monotonic()
        r = fed.pull("50", "bank-cq-1", e, BANK_ITEM, consent, request_id="retry-crash-0001")
        assert time.monotonic() - t0 < 20, "a dead peer must not hang the bank"
        assert r.status_code in (502, 504), r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "credential" not in r.text
        failed = json.loads(fed.leaf("50", r.json()["ledger_index"]))
        assert failed["outcome"] in ("denied", "failed") or failed["kind"] == "pull"
    finally:
        fed.lf.start("44")
    r = fed.pull("50", "bank-cq-1", e, BANK_ITEM, consent, request_id="retry-crash-0001")
    assert r.status_code == 200, r.text
    assert set(r.json()["receipts"]) == {"50", "44"}


def _person_with_property(fed: Fed, tag: str) -> str:
    import random

    person = generate_resident_id(random.Random(tag), region="310104")
    fed.issue("44", fed.gd_land, "property-certificate", person, {  # type: ignore[attr-defined]
        "certificate_number": f"粤(2024)广州市不动产权第{zlib.crc32(tag.encode()) % 10**7:07d}号",
        "owner_name": "赵七", "location": "广州市越秀区", "unit_number": "440104001001GB00001F0001",
        "right_type": "国有建设用地使用权/房屋所有权", "usage": "住宅", "area_m2": 70.0})
    fed.issue("44", fed.gd_land, "resident-id", person, {  # type: ignore[attr-defined]
        "name": "赵七", "sex": "女", "ethnicity": "汉", "birth_date": "1990-01-01",
        "address": "上海市徐汇区", "issuing_authority": "上海市公安局徐汇分局"})
    return person


def _uses(fed: Fed, home: str, consent: str) -> int:
    from exchange.persistence.models import Consent

    n = fed.node(home)
    try:
        with n.reads() as s:
            return int(s.get(Consent, consent).uses)  # type: ignore[union-attr]
    finally:
        n.close()


def test_revocation_at_a_third_node_home_is_immediate(fed: Fed) -> None:
    """Requester 50, holder 44, home 31: every granted pull counts a use at the home node, so
    a revocation there stops pulls at once, whatever status lists are cached elsewhere."""
    person = _person_with_property(fed, "sh-revoke")
    consent = fed.grant("31", person, "50:bank-cq-1", HOUSING_ITEM)
    assert fed.pull("50", "bank-cq-1", person, HOUSING_ITEM, consent, holder="44").status_code \
        == 200
    r = httpx.delete(f"{fed.url('31')}/v1/consents/{consent}", headers=fed.subject("31", person))
    assert r.status_code == 204
    r = fed.pull("50", "bank-cq-1", person, HOUSING_ITEM, consent, holder="44")
    assert r.status_code == 403, r.text
    assert r.json()["type"].endswith(":consent-revoked")
    assert "credential" not in r.text
    assert _uses(fed, "31", consent) == 1


def test_holder_frozen_mid_request_then_retry_is_idempotent(fed: Fed) -> None:
    """The holding node stops answering while it has the request: the bank gets a clear
    504 and nothing; when the node resumes it may finish the release, and the bank's retry
    with the same request_id gets that same answer without counting a second use."""
    import signal

    person = _person_with_property(fed, "sh-frozen")
    consent = fed.grant("31", person, "50:bank-cq-1", HOUSING_ITEM)
    holder = fed.lf.nodes["44"].process
    assert holder is not None
    holder.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = fed.pull("50", "bank-cq-1", person, HOUSING_ITEM, consent, holder="44",
                     request_id="frozen-holder-0001")
        assert time.monotonic() - t0 < 20
        assert r.status_code == 504, r.text
        assert "credential" not in r.text
        failed = json.loads(fed.leaf("50", r.json()["ledger_index"]))
        assert (failed["outcome"], failed["reason"]) == ("failed", "peer-timeout")
    finally:
        holder.send_signal(signal.SIGCONT)
    fed.lf.wait_ready("44")
    r = fed.pull("50", "bank-cq-1", person, HOUSING_ITEM, consent, holder="44",
                 request_id="frozen-holder-0001")
    assert r.status_code == 200, r.text
    assert sorted(c["type"] for c in r.json()["credentials"]) == ["property-certificate",
                                                                  "resident-id"]
    time.sleep(1)
    assert _uses(fed, "31", consent) == 1
