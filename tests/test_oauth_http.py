"""POST /oauth2/token: private_key_jwt (RFC 7523) over the real app and database, and attacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from exchange.clients.tools import client_assertion
from exchange.crypto.jws import SigningKey
from exchange.persistence.models import UsedAssertion
from tests.helpers import access_token, add_agency, add_client, bearer, token_form


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(node, client_id, **over):  # type: ignore[no-untyped-def]
    now = int(node.clock.now())
    c = {
        "iss": client_id,
        "sub": client_id,
        "aud": f"{node.base_url}/oauth2/token",
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    c.update(over)
    return c


def _sign(key: SigningKey, claims: dict, **header) -> str:  # type: ignore[type-arg]
    h = {"alg": "EdDSA", "typ": "JWT", "kid": key.kid, **header}
    return pyjwt.encode(claims, key.private_key, algorithm="EdDSA", headers=h)


def _used_count(node) -> int:  # type: ignore[no-untyped-def]
    with node.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(UsedAssertion)) or 0)


def test_token_happy_path_defaults_to_registered_scopes(http, node) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    r = http.post("/oauth2/token", data=token_form(node, agency))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 600
    assert set(body["scope"].split()) == {
        "certificates:issue",
        "certificates:status",
        "certificates:read",
    }
    assert r.headers["cache-control"] == "no-store"
    # The token is a node-signed at+jwt verifiable with the published node JWKS.
    jwks = http.get("/.well-known/jwks.json").json()
    header = pyjwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt"
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    key = pyjwt.PyJWK(jwk).key
    claims = pyjwt.decode(body["access_token"], key, algorithms=["EdDSA"], audience=node.base_url)
    assert claims["sub"] == agency.client_id
    assert claims["exp"] - claims["iat"] <= 600


def test_narrower_scope_is_granted_and_wider_refused(http, node) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    r = http.post("/oauth2/token", data=token_form(node, agency, scope="certificates:read"))
    assert r.status_code == 200 and r.json()["scope"] == "certificates:read"
    r = http.post("/oauth2/token", data=token_form(node, agency, scope="ledger:audit"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


def _assert_invalid_client(http, node, form) -> None:  # type: ignore[no-untyped-def]
    before = _used_count(node)
    r = http.post("/oauth2/token", data=form)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"
    assert "error_description" in r.json()
    assert _used_count(node) == before, "a refused assertion must not be recorded"


def test_alg_none_is_refused(http, node) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims(node, agency.client_id)).encode())
    _assert_invalid_client(http, node, token_form(node, agency, assertion=f"{header}.{payload}."))


def test_hs256_signed_with_public_key_is_refused(http, node) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": agency.key.kid}).encode())
    payload = _b64(json.dumps(_claims(node, agency.client_id)).encode())
    secret = json.dumps(agency.public_jwk).encode()
    for material in (secret, base64.urlsafe_b64decode(agency.public_jwk["x"] + "=")):
        sig = _b64(hmac.new(material, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        _assert_invalid_client(
            http, node, token_form(node, agency, assertion=f"{header}.{payload}.{sig}")
        )


def test_wrong_kid_and_foreign_key_are_refused(http, node) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    other = SigningKey.generate()
    _assert_invalid_client(
        http,
        node,
        token_form(node, agency, assertion=_sign(other, _claims(node, agency.client_id))),
    )
    forged = SigningKey(kid=agency.key.kid, private_key=Ed25519PrivateKey.generate())
    _assert_invalid_client(
        http,
        node,
        token_form(node, agency, assertion=_sign(forged, _claims(node, agency.client_id))),
    )


@pytest.mark.parametrize(
    "override",
    [
        {"exp": -60},  # expired (beyond the 10 s clock-skew leeway)
        {"exp": 3600},  # more than 5 minutes ahead
        {"nbf": 600},  # not yet valid
        {"aud": "https://other.example/oauth2/token"},
        {"sub": "someone-else"},
        {"jti": None},
    ],
    ids=["expired", "exp-too-far", "future-nbf", "wrong-aud", "sub-not-client", "no-jti"],
)
def test_bad_assertion_claims_are_refused(http, node, override) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    now = int(node.clock.now())
    claims = _claims(node, agency.client_id)
    for k, v in override.items():
        if v is None:
            claims.pop(k)
        elif k in ("exp", "nbf"):
            claims[k] = now + v
        else:
            claims[k] = v
    _assert_invalid_client(
        http, node, token_form(node, agency, assertion=_sign(agency.key, claims))
    )


def test_replayed_jti_is_refused(http, node) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    a = client_assertion(
        agency.key,
        client_id=agency.client_id,
        token_url=f"{node.base_url}/oauth2/token",
        now=node.clock.now(),
    )
    assert http.post("/oauth2/token", data=token_form(node, agency, assertion=a)).status_code == 200
    _assert_invalid_client(http, node, token_form(node, agency, assertion=a))


def test_unknown_client_and_bad_grant(http, node) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    claims = _claims(node, "nobody")
    _assert_invalid_client(
        http, node, token_form(node, agency, assertion=_sign(agency.key, claims))
    )
    r = http.post("/oauth2/token", data={**token_form(node, agency), "grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_access_token_attacks(http, node, clock) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    token = access_token(http, node, agency)
    assert http.get("/v1/certificates/x", headers=bearer(token)).status_code == 404
    # No token, garbage, a token signed by someone else, a client assertion used as a token.
    assert http.get("/v1/certificates/x").status_code == 401
    assert http.get("/v1/certificates/x", headers=bearer("garbage")).status_code == 401
    _, p, _ = token.split(".")
    forged = SigningKey.generate()
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    fake = pyjwt.encode(
        claims,
        forged.private_key,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": pyjwt.get_unverified_header(token)["kid"]},
    )
    r = http.get("/v1/certificates/x", headers=bearer(fake))
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    assertion = client_assertion(
        agency.key,
        client_id=agency.client_id,
        token_url=f"{node.base_url}/oauth2/token",
        now=node.clock.now(),
    )
    assert http.get("/v1/certificates/x", headers=bearer(assertion)).status_code == 401
    # Expired: the clock moves past exp.
    clock.advance(601)
    r = http.get("/v1/certificates/x", headers=bearer(token))
    assert r.status_code == 401


def test_bank_token_cannot_issue(http, node) -> None:  # type: ignore[no-untyped-def]
    bank = add_client(node, "bank-1", "bank")
    token = access_token(http, node, bank)
    r = http.post(
        "/v1/certificates",
        headers=bearer(token),
        json={"type": "business-license", "subject_id": "91350100M000100Y43", "claims": {}},
    )
    assert r.status_code == 403
    assert r.json()["type"] == "urn:certex:problem:insufficient-scope"
