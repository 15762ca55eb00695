"""The certificate lifecycle over the real app: issue, read, verify, suspend, revoke, rotate."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from exchange.persistence.models import Certificate, StatusEntry
from exchange.status.codec import StatusList
from tests.helpers import (
    BUSINESS_LICENSE,
    access_token,
    add_agency,
    bearer,
    new_resident_id,
    new_uscc,
)


def _payload(jwt: str) -> dict[str, Any]:
    p = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))  # type: ignore[no-any-return]


def _issue(http, token, subject=None, claims=None, type_="business-license", **extra):  # type: ignore[no-untyped-def]
    body = {
        "type": type_,
        "subject_id": subject or new_uscc(),
        "claims": claims or BUSINESS_LICENSE,
        **extra,
    }
    return http.post("/v1/certificates", headers=bearer(token), json=body)


def _count(node, model=Certificate) -> int:  # type: ignore[no-untyped-def]
    with node.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def market(node):  # type: ignore[no-untyped-def]
    return add_agency(node, ["business-license", "food-business-license"])


@pytest.fixture
def token(http, node, market):  # type: ignore[no-untyped-def]
    return access_token(http, node, market)


def test_issue_returns_sd_jwt_vc_as_designed(http, node, market, token) -> None:  # type: ignore[no-untyped-def]
    subject = new_uscc("subject")
    r = _issue(http, token, subject)
    assert r.status_code == 201, r.text
    body = r.json()
    cred = body["credential"]
    jwt, *disclosures = cred.split("~")
    assert disclosures[-1] == "" and len(disclosures) - 1 == len(BUSINESS_LICENSE) + 1
    header = json.loads(base64.urlsafe_b64decode(jwt.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA" and header["typ"] == "dc+sd-jwt" and header["kid"]
    payload = _payload(jwt)
    assert payload["iss"] == f"{node.base_url}/issuers/{market.client_id}"
    assert payload["vct"] == "urn:cn:gov:certex:vct:business-license:1"
    assert payload["certificate_id"] == body["id"]
    assert body["id"].startswith("1.2.156.3005.2.")
    assert set(payload["status"]["status_list"]) == {"idx", "uri"}
    assert payload["_sd_alg"] == "sha-256"
    assert payload["_sd"] == sorted(payload["_sd"])
    # No claim about the subject is in plain view.
    for claim in ("sub", *BUSINESS_LICENSE):
        assert claim not in payload
    assert subject not in base64.urlsafe_b64decode(jwt.split(".")[1] + "==").decode()


def test_read_verify_suspend_resume_revoke(http, node, market, token) -> None:  # type: ignore[no-untyped-def]
    r = _issue(http, token)
    cert_id, cred = r.json()["id"], r.json()["credential"]
    got = http.get(f"/v1/certificates/{cert_id}", headers=bearer(token))
    assert got.status_code == 200 and got.json()["status"] == "valid"

    v = http.post("/v1/verify", json={"credential": cred}).json()
    assert v["valid"] is True and v["status"] == "valid"
    assert v["disclosed"]["name"] == BUSINESS_LICENSE["name"]
    assert v["type"] == "business-license"

    uri = got.json()["status_list"]["uri"]
    idx = got.json()["status_list"]["idx"]
    list_path = uri.removeprefix(node.base_url)

    def list_status() -> int:
        resp = http.get(list_path)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/statuslist+jwt")
        p = _payload(resp.text)
        assert p["sub"] == uri and p["ttl"] > 0
        return StatusList.decode(p["status_list"]["lst"], p["status_list"]["bits"]).get(idx)

    assert list_status() == 0
    for new, code, verdict in (
        ("suspended", 2, "suspended"),
        ("valid", 0, None),
        ("revoked", 1, "revoked"),
    ):
        s = http.post(
            f"/v1/certificates/{cert_id}/status",
            headers=bearer(token),
            json={"status": new, "reason": "test"},
        )
        assert s.status_code == 200, s.text
        assert list_status() == code, f"the very next status-list fetch shows {new}"
        v = http.post("/v1/verify", json={"credential": cred}).json()
        assert v["valid"] is (verdict is None)
        assert v["reason"] == verdict

    # Revoked is final.
    s = http.post(
        f"/v1/certificates/{cert_id}/status",
        headers=bearer(token),
        json={"status": "valid", "reason": "undo"},
    )
    assert s.status_code == 409
    assert s.json()["type"] == "urn:certex:problem:revoked-is-final"
    assert list_status() == 1


def test_status_indices_are_random_and_unique(http, node, token) -> None:  # type: ignore[no-untyped-def]
    idxs = {
        _payload(_issue(http, token).json()["credential"].split("~")[0])["status"]["status_list"][
            "idx"
        ]
        for _ in range(12)
    }
    assert len(idxs) == 12
    assert sorted(idxs) != list(range(min(idxs), min(idxs) + 12)), "indices must not be sequential"


def test_cross_tenant_agency_sees_nothing(http, node, token) -> None:  # type: ignore[no-untyped-def]
    cert_id = _issue(http, token).json()["id"]
    other = add_agency(node, ["business-license"], name="浙江省市场监督管理局")
    other_token = access_token(http, node, other)
    assert http.get(f"/v1/certificates/{cert_id}", headers=bearer(other_token)).status_code == 404
    r = http.post(
        f"/v1/certificates/{cert_id}/status",
        headers=bearer(other_token),
        json={"status": "revoked", "reason": "hostile"},
    )
    assert r.status_code == 404
    with node.sessions() as s:
        assert s.get(Certificate, cert_id).status == "valid"  # type: ignore[union-attr]


BAD_ISSUES = [
    (
        "unauthorised-type",
        {
            "type_": "resident-id",
            "subject": "11010519491231002X",
            "claims": {
                "name": "x",
                "sex": "男",
                "ethnicity": "汉",
                "birth_date": "1949-12-31",
                "address": "x",
                "issuing_authority": "x",
            },
        },
        403,
        "type-not-authorised",
    ),
    ("unknown-type", {"type_": "dragon-license"}, 400, "unknown-certificate-type"),
    ("bad-uscc-check", {"subject": "91350100M000100Y44"}, 400, "invalid-subject-id"),
    ("bad-id-check", {"subject": "110105194912310021"}, 400, None),
    ("person-for-enterprise-type", {"subject": "11010519491231002X"}, 400, "wrong-subject-kind"),
    ("unknown-claim", {"claims": {**BUSINESS_LICENSE, "shareholders": "x"}}, 400, "unknown-claim"),
    (
        "missing-claim",
        {"claims": {k: v for k, v in BUSINESS_LICENSE.items() if k != "name"}},
        400,
        "missing-claim",
    ),
    (
        "ill-typed-claim",
        {"claims": {**BUSINESS_LICENSE, "established_on": 20150601}},
        400,
        "ill-typed-claim",
    ),
    (
        "bad-date",
        {"claims": {**BUSINESS_LICENSE, "established_on": "2015-02-30"}},
        400,
        "ill-typed-claim",
    ),
    ("validity-in-past", {"valid_until": "2001-01-01"}, 400, "bad-validity"),
    ("naive-timestamp", {"valid_until": "2031-01-01T00:00:00"}, 400, "bad-validity"),
    ("not-a-timestamp", {"valid_until": "tomorrow"}, 400, "bad-validity"),
    ("extra-field", {"admin": True}, 400, "invalid-request"),
]


@pytest.mark.parametrize(
    ("case", "kw", "status", "code"), BAD_ISSUES, ids=[b[0] for b in BAD_ISSUES]
)
def test_bad_issue_requests_change_nothing(http, node, token, case, kw, status, code) -> None:  # type: ignore[no-untyped-def]
    before = (_count(node), _count(node, StatusEntry))
    r = _issue(http, token, **kw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert {"type", "title", "status", "detail"} <= set(problem)
    if code:
        assert problem["type"] == f"urn:certex:problem:{code}"
    else:
        assert problem["type"].startswith("urn:certex:problem:invalid-")
    assert (_count(node), _count(node, StatusEntry)) == before


def test_oversized_and_malformed_bodies(http, node, token) -> None:  # type: ignore[no-untyped-def]
    before = _count(node)
    huge = {**BUSINESS_LICENSE, "business_scope": "经营" * 200_000}
    r = _issue(http, token, claims=huge)
    assert r.status_code == 413
    assert r.json()["type"] == "urn:certex:problem:body-too-large"
    r = http.post(
        "/v1/certificates",
        headers={**bearer(token), "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    assert _count(node) == before


def test_person_certificate_and_types_listing(http, node) -> None:  # type: ignore[no-untyped-def]
    police = add_agency(node, ["resident-id"], name="上海市公安局")
    t = access_token(http, node, police)
    claims = {
        "name": "李四",
        "sex": "女",
        "ethnicity": "汉",
        "birth_date": "1990-03-07",
        "address": "上海市黄浦区",
        "issuing_authority": "上海市公安局黄浦分局",
    }
    r = _issue(http, t, subject=new_resident_id(), claims=claims, type_="resident-id")
    assert r.status_code == 201, r.text
    types = http.get("/v1/certificate-types").json()["types"]
    keys = {t["key"] for t in types}
    assert {
        "business-license",
        "resident-id",
        "property-certificate",
        "social-insurance-record",
        "food-business-license",
        "health-certificate",
        "construction-permit",
        "tax-payment-certificate",
    } <= keys
    bl = next(t for t in types if t["key"] == "business-license")
    assert {
        "name",
        "legal_representative",
        "registered_capital",
        "address",
        "business_scope",
        "established_on",
    } <= {c["name"] for c in bl["claims"]}


def test_rotation_keeps_old_credentials_verifiable(http, node, market, token) -> None:  # type: ignore[no-untyped-def]
    old = _issue(http, token).json()["credential"]
    old_kid = json.loads(base64.urlsafe_b64decode(old.split(".")[0] + "=="))["kid"]
    with node.sessions.begin() as s:
        node.keys.rotate(s, f"agency:{market.client_id}")
    new = _issue(http, token).json()["credential"]
    new_kid = json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"]
    assert new_kid != old_kid
    meta = http.get(f"/.well-known/jwt-vc-issuer/issuers/{market.client_id}").json()
    assert {k["kid"] for k in meta["jwks"]["keys"]} == {old_kid, new_kid}
    for cred in (old, new):
        assert http.post("/v1/verify", json={"credential": cred}).json()["valid"] is True


def test_issuer_metadata_and_jwks_publish_no_private_material(http, node, market) -> None:  # type: ignore[no-untyped-def]
    meta = http.get(f"/.well-known/jwt-vc-issuer/issuers/{market.client_id}")
    assert meta.status_code == 200
    assert meta.json()["issuer"] == f"{node.base_url}/issuers/{market.client_id}"
    node_jwks = http.get("/.well-known/jwks.json").json()
    assert len(node_jwks["keys"]) >= 3
    for k in [*meta.json()["jwks"]["keys"], *node_jwks["keys"]]:
        assert k["kty"] == "OKP" and k["crv"] == "Ed25519" and "d" not in k
    assert http.get(f"/.well-known/jwt-vc-issuer/issuers/{new_uscc('absent')}").status_code == 404
    assert http.get("/.well-known/jwt-vc-issuer/issuers/not-a-uscc").status_code == 400
    # Private keys on disk are encrypted PKCS#8.
    pems = list((node.settings.keys_dir).glob("*.pem"))
    assert pems and all(b"ENCRYPTED PRIVATE KEY" in p.read_bytes() for p in pems)
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in pems)


def test_openapi_lists_routes_with_errors(http) -> None:  # type: ignore[no-untyped-def]
    spec = http.get("/openapi.json").json()
    for path in (
        "/oauth2/token",
        "/v1/certificates",
        "/v1/certificates/{cert_id}/status",
        "/v1/verify",
        "/v1/status-lists/{list_id}",
        "/.well-known/jwks.json",
        "/.well-known/jwt-vc-issuer/issuers/{uscc}",
        "/v1/certificate-types",
    ):
        assert path in spec["paths"], path
    assert "403" in spec["paths"]["/v1/certificates"]["post"]["responses"]


def test_body_limit_over_real_http_framing(live_server, node, token) -> None:  # type: ignore[no-untyped-def]
    """Through uvicorn: a declared oversized body, a chunked one that grows past the limit,
    and a lying Content-Length are all refused with nothing stored."""
    import socket

    import httpx

    before = _count(node)
    limit = node.settings.max_body_bytes
    headers = {**bearer(token), "Content-Type": "application/json"}

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"type": "business-license", "claims": {"x": "'
        for _ in range(limit // 4096 + 2):
            yield b"a" * 4096
        yield b'"}}'

    with httpx.Client(base_url=live_server, timeout=30) as c:
        r = c.post("/v1/certificates", headers=headers, content=chunks())  # chunked
        assert r.status_code == 413, r.text
        assert r.json()["type"] == "urn:certex:problem:body-too-large"
        r = c.post("/v1/certificates", headers={**headers, "Content-Length": str(limit + 1)},
                   content=b"x" * (limit + 1))
        assert r.status_code == 413
    # A Content-Length smaller than what follows: the server reads only the declared bytes
    # (the rest is not part of this request), so the handler sees a short, invalid body.
    host, port = live_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/certificates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + token.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5\r\nConnection: close\r\n\r\n" + b"{" + b"a" * 300_000)
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 4"), reply[:100]
    assert _count(node) == before
