"""POST /v1/verify and interop: credentials checked by independent libraries and attacked."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from sd_jwt.verifier import SDJWTVerifier

from exchange.crypto.jws import SigningKey, sign_jwt
from exchange.crypto.sdjwt import present
from tests.helpers import BUSINESS_LICENSE, access_token, add_agency, bearer, new_uscc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _dec(s: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))


@pytest.fixture
def issued(http, node):  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    token = access_token(http, node, agency)

    def issue(subject: str | None = None, claims: dict[str, Any] | None = None) -> str:
        r = http.post(
            "/v1/certificates",
            headers=bearer(token),
            json={
                "type": "business-license",
                "subject_id": subject or new_uscc(),
                "claims": claims or BUSINESS_LICENSE,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["credential"])

    issue.agency = agency  # type: ignore[attr-defined]
    return issue


def _verify(http, cred: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = http.post("/v1/verify", json={"credential": cred})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_interop_reference_sd_jwt_and_jwcrypto(http, node, issued) -> None:  # type: ignore[no-untyped-def]
    subject = new_uscc("interop")
    cred = issued(subject)
    payload = _dec(cred.split("~")[0].split(".")[1])
    iss = payload["iss"]
    # Keys fetched from the issuer metadata URL that the credential's iss names.
    meta_path = "/.well-known/jwt-vc-issuer" + iss.removeprefix(node.base_url)
    meta = http.get(meta_path).json()
    assert meta["issuer"] == iss

    def issuer_key(unverified_iss: str, header: dict[str, Any]) -> JWK:
        assert unverified_iss == iss
        jwk = next(k for k in meta["jwks"]["keys"] if k["kid"] == header["kid"])
        return JWK(**jwk)

    full = SDJWTVerifier(cred, issuer_key).get_verified_payload()
    assert full["sub"] == subject
    for k, v in BUSINESS_LICENSE.items():
        assert full[k] == v
    # A presentation with two claims: the reference verifier sees exactly those.
    pres = present(cred, {"name", "address"})
    partial = SDJWTVerifier(pres, issuer_key).get_verified_payload()
    assert {k for k in partial if k in BUSINESS_LICENSE or k == "sub"} == {"name", "address"}
    # jwcrypto checks the issuer JWT signature on its own.
    jws = JWS()
    jws.deserialize(cred.split("~")[0])
    header = _dec(cred.split(".")[0])
    jws.verify(
        JWK(**next(k for k in meta["jwks"]["keys"] if k["kid"] == header["kid"])), alg="EdDSA"
    )
    assert json.loads(jws.payload)["certificate_id"] == payload["certificate_id"]


def test_presentation_verifies_with_subset(http, issued) -> None:  # type: ignore[no-untyped-def]
    cred = issued()
    v = _verify(http, present(cred, {"name"}))
    assert v["valid"] and set(v["disclosed"]) == {"name"}


def _split(cred: str) -> tuple[str, list[str]]:
    jwt, *rest = cred.split("~")
    return jwt, [d for d in rest if d]


def test_tampered_disclosure(http, issued) -> None:  # type: ignore[no-untyped-def]
    jwt, ds = _split(issued())
    d = _dec(ds[1])
    d[2] = "伪造的名称" if isinstance(d[2], str) else 0
    forged = _b64(json.dumps(d, ensure_ascii=False).encode())
    v = _verify(http, "~".join([jwt, ds[0], forged, *ds[2:]]) + "~")
    assert v["valid"] is False and v["reason"] == "disclosure-unreferenced"


def test_disclosure_from_another_credential(http, issued) -> None:  # type: ignore[no-untyped-def]
    jwt, ds = _split(issued())
    _, other = _split(issued(claims={**BUSINESS_LICENSE, "name": "另一家公司"}))
    v = _verify(http, "~".join([jwt, *ds[:1], other[1]]) + "~")
    assert v["valid"] is False and v["reason"] == "disclosure-unreferenced"


def test_duplicated_disclosure(http, issued) -> None:  # type: ignore[no-untyped-def]
    jwt, ds = _split(issued())
    v = _verify(http, "~".join([jwt, ds[0], ds[0]]) + "~")
    assert v["valid"] is False and v["reason"] == "disclosure-duplicate"


def test_signature_by_another_key_and_wrong_kid(http, node, issued) -> None:  # type: ignore[no-untyped-def]
    jwt, ds = _split(issued())
    header, payload = _dec(jwt.split(".")[0]), _dec(jwt.split(".")[1])
    attacker = SigningKey.generate()
    # Same kid as the real key, but signed by the attacker.
    forged = SigningKey(kid=header["kid"], private_key=attacker.private_key)
    v = _verify(http, "~".join([sign_jwt(payload, forged, typ="dc+sd-jwt"), *ds]) + "~")
    assert v["valid"] is False and v["reason"] == "bad-signature"
    v = _verify(http, "~".join([sign_jwt(payload, attacker, typ="dc+sd-jwt"), *ds]) + "~")
    assert v["valid"] is False and v["reason"] == "unknown-key"


def test_alg_none_and_hs256_confusion(http, node, issued) -> None:  # type: ignore[no-untyped-def]
    import hmac

    jwt, ds = _split(issued())
    header, payload = _dec(jwt.split(".")[0]), _dec(jwt.split(".")[1])
    body = _b64(json.dumps(payload).encode())
    none = _b64(json.dumps({**header, "alg": "none"}).encode()) + "." + body + "."
    assert _verify(http, none + "~" + "~".join(ds) + "~")["reason"] == "alg-not-allowed"
    hs_h = _b64(json.dumps({**header, "alg": "HS256"}).encode())
    meta = http.get(f"/.well-known/jwt-vc-issuer/issuers/{issued.agency.client_id}").json()
    secret = json.dumps(meta["jwks"]["keys"][0]).encode()
    sig = _b64(hmac.new(secret, f"{hs_h}.{body}".encode(), hashlib.sha256).digest())
    v = _verify(http, f"{hs_h}.{body}.{sig}~" + "~".join(ds) + "~")
    assert v["valid"] is False and v["reason"] == "alg-not-allowed"


def test_expired_and_not_yet_valid(http, node, clock, issued) -> None:  # type: ignore[no-untyped-def]
    cred = issued()
    exp = _dec(cred.split(".")[1])["exp"]
    clock.t = exp + 3600
    assert _verify(http, cred)["reason"] == "expired"
    clock.t = _dec(cred.split(".")[1])["nbf"] - 3600
    assert _verify(http, cred)["reason"] == "not-yet-valid"


def test_unknown_issuer_and_garbage(http, node) -> None:  # type: ignore[no-untyped-def]
    key = SigningKey.generate()
    jwt = sign_jwt(
        {"iss": "https://evil.example/issuers/x", "vct": "x", "exp": 2**40}, key, typ="dc+sd-jwt"
    )
    assert _verify(http, jwt + "~")["reason"] == "unknown-issuer"
    assert _verify(http, "not-a-credential")["valid"] is False
    r = http.post("/v1/verify", json={"credential": 5})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")


def test_concurrent_verifies_share_status_reads_and_each_gets_its_verdict(  # type: ignore[no-untyped-def]
    http, node, issued, live_server
) -> None:
    """Over real HTTP, 80 verifies at once: the status reads are batched across requests,
    and still every request gets the verdict of its own credential."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from sqlalchemy import text

    token = access_token(http, node, issued.agency)
    creds = [issued() for _ in range(8)]
    cert_ids = [_dec(c.split("~")[0].split(".")[1])["certificate_id"] for c in creds]
    expected: dict[str, str | None] = dict.fromkeys(creds)
    for n, status in ((0, "revoked"), (1, "revoked"), (2, "suspended")):
        r = http.post(f"/v1/certificates/{cert_ids[n]}/status", headers=bearer(token),
                      json={"status": status, "reason": "test"})
        assert r.status_code == 200, r.text
        expected[creds[n]] = status
    # A status entry that is gone (storage damaged): the credential cannot be vouched for.
    gone = _dec(creds[3].split("~")[0].split(".")[1])["status"]["status_list"]
    with node.engine.begin() as conn:
        conn.execute(text("DELETE FROM status_entries WHERE idx = :i AND list_id = :l"),
                     {"i": gone["idx"], "l": int(gone["uri"].rsplit("/", 1)[1])})
    expected[creds[3]] = "bad-status-claim"
    asks = [creds[i % len(creds)] for i in range(80)]

    def one(cred: str) -> tuple[str, dict[str, Any]]:
        with httpx.Client(base_url=live_server, timeout=30) as c:
            r = c.post("/v1/verify", json={"credential": cred})
            assert r.status_code == 200, r.text
            return cred, r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, asks))
    for cred, body in results:
        want = expected[cred]
        if want is None:
            assert body["valid"] is True and body["status"] == "valid", body
        else:
            assert body["valid"] is False and body["reason"] == want, body
    # The app served by the test client again (another event loop) still answers.
    assert _verify(http, creds[5])["valid"] is True


# -- the check memo: a credential presented again is not signature-checked again ------------


def test_memo_keeps_only_what_cannot_change(http, node, clock, issued) -> None:  # type: ignore[no-untyped-def]
    """Presented again, a credential comes from the memo; its status, validity window and
    issuer key are still judged on every request."""
    token = access_token(http, node, issued.agency)
    cred = issued()
    node.check_memo.clear()
    first = _verify(http, cred)
    assert first["valid"] is True and len(node.check_memo) == 1
    assert _verify(http, cred) == first  # the same answer, from the memo
    # Status is read on every request: revoked after it was remembered.
    cert_id = _dec(cred.split(".")[1])["certificate_id"]
    r = http.post(f"/v1/certificates/{cert_id}/status", headers=bearer(token),
                  json={"status": "suspended", "reason": "test"})
    assert r.status_code == 200, r.text
    assert _verify(http, cred)["reason"] == "suspended"
    # The window too: past exp (beyond the leeway) the remembered credential has expired.
    fresh = issued()
    assert _verify(http, fresh)["valid"] is True and fresh in node.check_memo._held
    clock.t = _dec(fresh.split(".")[1])["exp"] + 31
    assert _verify(http, fresh)["reason"] == "expired"


def test_memo_never_keeps_a_failure(http, node, clock, issued) -> None:  # type: ignore[no-untyped-def]
    cred = issued()
    jwt, ds = _split(cred)
    node.check_memo.clear()
    # A tampered copy of a remembered credential is another text: checked in full.
    assert _verify(http, cred)["valid"] is True
    v = _verify(http, "~".join([jwt, ds[0], ds[0]]) + "~")
    assert v["reason"] == "disclosure-duplicate"
    flipped = jwt[:-2] + ("A" if jwt[-2] != "A" else "B") + jwt[-1]
    assert _verify(http, "~".join([flipped, *ds]) + "~")["reason"] == "bad-signature"
    # Refused for its window: not kept, so refused again once time is back.
    later = issued()
    clock.t = _dec(later.split(".")[1])["exp"] + 3600
    assert _verify(http, later)["reason"] == "expired"
    assert later not in node.check_memo._held and len(node.check_memo) == 1


def test_memo_resolves_the_issuer_key_every_time(node, issued) -> None:  # type: ignore[no-untyped-def]
    from exchange.certificates.verify import CheckMemo, check_credential
    from exchange.errors import VerificationFailed

    cred = issued()
    header = _dec(cred.split(".")[0])
    with node.reads() as session:
        real = node.keys.public_key(session, header["kid"], f"agency:{issued.agency.client_id}")
    calls: list[str] = []

    def honest(iss: str, h: Any) -> Any:
        calls.append(iss)
        return real

    memo = CheckMemo()
    now = node.clock.now()
    a = check_credential(cred, resolve_key=honest, now=now, memo=memo)
    assert check_credential(cred, resolve_key=honest, now=now, memo=memo) == a
    assert len(calls) == 2  # resolved on the hit too

    # The issuer's key is another one now: a full check, which the signature fails.
    other = SigningKey.generate().private_key.public_key()
    with pytest.raises(VerificationFailed) as e:
        check_credential(cred, resolve_key=lambda iss, h: other, now=now, memo=memo)
    assert e.value.code == "bad-signature"

    # The issuer or key is no longer known: the resolver's refusal stands.
    def gone(iss: str, h: Any) -> Any:
        raise VerificationFailed("no such key", code="unknown-key")

    with pytest.raises(VerificationFailed) as e:
        check_credential(cred, resolve_key=gone, now=now, memo=memo)
    assert e.value.code == "unknown-key"


def test_memo_is_bounded_and_can_be_off(issued, node) -> None:  # type: ignore[no-untyped-def]
    from exchange.certificates.verify import CheckMemo, check_credential

    creds = [issued() for _ in range(3)]
    header = _dec(creds[0].split(".")[0])
    with node.reads() as session:
        key = node.keys.public_key(session, header["kid"], f"agency:{issued.agency.client_id}")
    now = node.clock.now()
    two = CheckMemo(max_entries=2)
    for c in creds:
        check_credential(c, resolve_key=lambda iss, h: key, now=now, memo=two)
    assert len(two) == 2 and creds[0] not in two._held  # the oldest went first
    small = CheckMemo(max_chars=len(creds[0]) + len(creds[1]) - 1)
    for c in creds[:2]:
        check_credential(c, resolve_key=lambda iss, h: key, now=now, memo=small)
    assert len(small) == 1
    off = CheckMemo(max_entries=0)
    check_credential(creds[0], resolve_key=lambda iss, h: key, now=now, memo=off)
    assert len(off) == 0
