"""Interop: our SD-JWTs against the reference implementation (``sd-jwt``) and jwcrypto.

The reference verifier hands our issuer JWT to jwcrypto's ``JWS.verify`` with the header's
own ``alg`` (its ``ES256`` default applies only to Key Binding JWTs), so ``EdDSA`` needs no
extra parameter; the callback returns a jwcrypto ``JWK`` built from our public JWK.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS, InvalidJWSSignature
from sd_jwt.common import SDObj
from sd_jwt.issuer import SDJWTIssuer
from sd_jwt.verifier import SDJWTVerifier

from exchange.crypto.encoding import b64url_decode
from exchange.crypto.jwk import jwk_thumbprint, public_key_from_jwk
from exchange.crypto.jws import SigningKey
from exchange.crypto.sdjwt import issue_sd_jwt, present, split_sd_jwt, verify_sd_jwt
from exchange.errors import VerificationFailed

NOW = 1_800_000_000
KEY = SigningKey.generate()
ISS = "https://node.example/issuers/91310000MA1FL8KQ3B"
PLAIN = {
    "iss": ISS,
    "iat": NOW,
    "nbf": NOW,
    "exp": NOW + 86_400,
    "vct": "urn:certex:business-licence",
    "certificate_id": "1.2.156.3005.2.11100000000001.91310000MA1FL8KQ3B.2026010100000001.001.X",
    "status": {"status_list": {"idx": 42, "uri": "https://node.example/v1/status-lists/1"}},
}
SUBJECT = {
    "sub": "91310000MA1FL8KQ3B",
    "name": "上海某某科技有限公司",
    "legal_representative": "张三",
    "registered_capital": 5_000_000,
    "address": {"province": "上海市", "street": "人民大道200号"},
    "scope": ["软件开发", "技术咨询"],
}


def _reference_payload(sd_jwt: str, issuer_jwk: dict[str, Any]) -> dict[str, Any]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def issuer_key(issuer: str, header: dict[str, Any]) -> JWK:
        seen.append((issuer, header))
        return JWK(**issuer_jwk)

    payload: dict[str, Any] = SDJWTVerifier(sd_jwt, issuer_key).get_verified_payload()
    assert seen == [(ISS, {"alg": "EdDSA", "kid": KEY.kid, "typ": "dc+sd-jwt"})]
    return payload


def test_reference_verifier_accepts_our_credential() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT, decoys=4)
    payload = _reference_payload(sd_jwt, KEY.public_jwk())
    assert {k: v for k, v in payload.items() if k not in PLAIN} == SUBJECT
    assert {k: v for k, v in payload.items() if k in PLAIN} == PLAIN


def test_reference_verifier_accepts_our_presentation() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    keep = {"name", "registered_capital"}
    payload = _reference_payload(present(sd_jwt, keep), KEY.public_jwk())
    assert {k: v for k, v in payload.items() if k not in PLAIN} == {
        k: SUBJECT[k] for k in keep
    }
    assert _reference_payload(present(sd_jwt, ()), KEY.public_jwk()) == PLAIN


def test_reference_verifier_rejects_our_credential_under_another_key() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    other = SigningKey.generate().public_jwk()
    with pytest.raises(InvalidJWSSignature):
        SDJWTVerifier(sd_jwt, lambda _iss, _header: JWK(**other))


def test_jwcrypto_verifies_the_issuer_jwt() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    issuer_jwt, _, _ = split_sd_jwt(sd_jwt)
    jws = JWS()
    jws.deserialize(issuer_jwt)
    jws.verify(JWK(**KEY.public_jwk()), alg="EdDSA")
    assert jws.jose_header == {"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": KEY.kid}
    payload = json.loads(jws.payload)
    assert payload["_sd_alg"] == "sha-256"
    assert len(payload["_sd"]) == len(SUBJECT)


def test_we_verify_the_reference_issuers_credential() -> None:
    issuer_key = JWK.generate(kty="OKP", crv="Ed25519")
    issuer_jwk = json.loads(issuer_key.export_public())
    kid = issuer_key.thumbprint()
    assert kid == jwk_thumbprint(issuer_jwk)
    claims: dict[Any, Any] = dict(PLAIN)
    claims.update({SDObj(name): value for name, value in SUBJECT.items()})
    issued = SDJWTIssuer(
        claims,
        issuer_key,
        sign_alg="EdDSA",
        extra_header_parameters={"typ": "dc+sd-jwt", "kid": kid},
    ).sd_jwt_issuance

    def resolve(header: Any, payload: Any) -> Any:
        if header.get("kid") != kid or payload.get("iss") != ISS:
            raise VerificationFailed("unknown key", code="unknown-key")
        return public_key_from_jwk(issuer_jwk)

    verified = verify_sd_jwt(issued, resolve, now=NOW)
    assert verified.disclosed == SUBJECT
    assert dict(verified.claims) == PLAIN
    shown = verify_sd_jwt(present(issued, {"name"}), resolve, now=NOW)
    assert shown.disclosed == {"name": SUBJECT["name"]}
    # The reference encodes with ASCII escapes and ", " separators; digests still match,
    # because they are taken over the encoded string, not re-serialised JSON.
    assert b", " in b64url_decode(split_sd_jwt(issued)[1][0])
