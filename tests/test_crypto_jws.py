"""JWS/JWT, JWK and the encoders: round trips, interop, and one test per attack."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from datetime import UTC, datetime
from typing import Any

import jwt as pyjwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS

from exchange.crypto.canonical import canonical_json, parse_json
from exchange.crypto.encoding import b64_decode, b64_encode, b64url_decode, b64url_encode
from exchange.crypto.jwk import jwk_thumbprint, public_jwk, public_key_from_jwk
from exchange.crypto.jws import ALLOWED_ALGS, SigningKey, decode_jwt, resolve_by_kid, sign_jwt
from exchange.errors import InvalidInput, VerificationFailed

NOW = 1_800_000_000.0
KEY = SigningKey.generate()
RESOLVE = resolve_by_kid({KEY.kid: KEY.public_key()})
CLAIMS = {"iss": "https://node.example", "sub": "client-1", "exp": int(NOW) + 300, "iat": int(NOW)}


def _b64json(value: Any) -> str:
    return b64url_encode(json.dumps(value).encode())


def _token(header: dict[str, Any], claims: dict[str, Any], *, signed: bool = True) -> str:
    """A compact JWS built without the module under test (stdlib json, header as given)."""
    signing_input = f"{_b64json(header)}.{_b64json(claims)}"
    signature = KEY.private_key.sign(signing_input.encode()) if signed else b""
    return f"{signing_input}.{b64url_encode(signature)}"


def _decode(token: str, **kwargs: Any) -> Any:
    kwargs.setdefault("typ", ("JWT",))
    kwargs.setdefault("now", NOW)
    return decode_jwt(token, kwargs.pop("resolve_key", RESOLVE), **kwargs)


def _code(token: str, **kwargs: Any) -> str:
    with pytest.raises(VerificationFailed) as info:
        _decode(token, **kwargs)
    return info.value.code


# --- encoding --------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_b64_round_trips(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data
    assert "=" not in b64url_encode(data)
    assert b64_decode(b64_encode(data)) == data


@pytest.mark.parametrize("bad", ["QQ==", "QQ=", "a+b/", "QR", "A", "QQ\n", " QQ", "Q Q", "ü"])
def test_b64url_decode_is_strict(bad: str) -> None:
    with pytest.raises(InvalidInput):
        b64url_decode(bad)


@pytest.mark.parametrize("bad", ["QQ", "QR==", "a-b_", "QQ==\n", "Q===", "QQ==QQ=="])
def test_b64_decode_is_strict(bad: str) -> None:
    with pytest.raises(InvalidInput):
        b64_decode(bad)


# --- canonical JSON --------------------------------------------------------------------

_KEYS = st.text(max_size=8) | st.text(
    alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=4
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _KEYS
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_canonical_json_round_trips(value: Any) -> None:
    encoded = canonical_json(value)
    assert orjson.loads(encoded) == value
    assert parse_json(encoded) == value
    assert canonical_json(parse_json(encoded)) == encoded  # a fixed point


@given(st.dictionaries(_KEYS, JSON_VALUES, max_size=6))
def test_canonical_json_ignores_insertion_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical_json(reordered) == canonical_json(value)
    assert list(orjson.loads(canonical_json(value))) == sorted(value, key=lambda k: k.encode())


def test_canonical_json_form() -> None:
    assert canonical_json({"b": 1, "a": [1.5, None, True], "中": "证照"}) == (
        '{"a":[1.5,null,true],"b":1,"中":"证照"}'.encode()
    )


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, -math.inf, {1: "x"}, {"t": datetime.now(UTC)}, {1, 2}, b"x", 2**64],
)
def test_canonical_json_refuses_non_json(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        canonical_json(bad)


def test_canonical_json_refuses_deep_nesting() -> None:
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(InvalidInput):
        canonical_json(deep)


@pytest.mark.parametrize("bad", [b'{"a":1,"a":2}', b"NaN", b'{"a":Infinity}', b"\xff", b"{"])
def test_parse_json_is_strict(bad: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_json(bad)


# --- JWK -------------------------------------------------------------------------------

RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}


def test_thumbprint_matches_rfc8037_a3() -> None:
    assert jwk_thumbprint(RFC8037_JWK) == RFC8037_THUMBPRINT
    assert jwk_thumbprint({**RFC8037_JWK, "kid": "ignored", "use": "sig"}) == RFC8037_THUMBPRINT
    assert JWK(**RFC8037_JWK).thumbprint() == RFC8037_THUMBPRINT


def test_thumbprint_equals_jwcrypto_for_fresh_keys() -> None:
    for _ in range(5):
        key = SigningKey.generate()
        assert key.kid == jwk_thumbprint(key.public_jwk()) == JWK(**key.public_jwk()).thumbprint()


def test_thumbprint_refuses_other_key_types() -> None:
    with pytest.raises(InvalidInput):
        jwk_thumbprint({"kty": "RSA", "n": "AQAB", "e": "AQAB"})
    with pytest.raises(InvalidInput):
        jwk_thumbprint({"kty": "OKP", "crv": "Ed25519"})


def test_public_jwk_round_trip() -> None:
    jwk = KEY.public_jwk()
    assert jwk == {**public_jwk(KEY.public_key()), "kid": KEY.kid}
    assert set(jwk) == {"kty", "crv", "x", "kid"}
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public_key_from_jwk(jwk).public_bytes(Encoding.Raw, PublicFormat.Raw) == raw


@pytest.mark.parametrize(
    "bad",
    [
        {**RFC8037_JWK, "d": RFC8037_D},
        {**RFC8037_JWK, "crv": "Ed448"},
        {**RFC8037_JWK, "crv": "X25519"},
        {"kty": "EC", "crv": "P-256", "x": RFC8037_X, "y": RFC8037_X},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "oct", "k": "c2VjcmV0"},
        {**RFC8037_JWK, "x": RFC8037_X[:-2]},
        {**RFC8037_JWK, "x": RFC8037_X + "=="},
        {**RFC8037_JWK, "alg": "ES256"},
        {**RFC8037_JWK, "use": "enc"},
        {"kty": "OKP", "crv": "Ed25519"},
        ["OKP"],
    ],
)
def test_public_key_from_jwk_allowlist(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        public_key_from_jwk(bad)
    assert info.value.code == "invalid-jwk"


def test_signing_key_never_shows_private_material() -> None:
    assert "private_key" not in repr(KEY)
    with pytest.raises(InvalidInput):
        SigningKey(kid="", private_key=KEY.private_key)
    with pytest.raises(InvalidInput):
        SigningKey(kid="k", private_key=Ed448PrivateKey.generate())  # type: ignore[arg-type]


# --- JWS round trips and interop ------------------------------------------------------


def test_sign_and_decode_round_trip() -> None:
    claims = {**CLAIMS, "name": "上海市市场监督管理局"}
    token = sign_jwt(claims, KEY, typ="JWT", extra_headers={"x5t#S256": "abc"})
    verified = _decode(token)
    assert verified.claims == claims
    expected_header = {"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid, "x5t#S256": "abc"}
    assert dict(verified.header) == expected_header


def test_signed_bytes_are_canonical() -> None:
    token = sign_jwt({"b": 1, "a": "证"}, KEY, typ="JWT")
    header, payload, _ = token.split(".")
    assert b64url_decode(payload) == canonical_json({"a": "证", "b": 1})
    assert b64url_decode(header) == canonical_json({"alg": "EdDSA", "kid": KEY.kid, "typ": "JWT"})


def test_our_tokens_verify_with_jwcrypto_and_pyjwt() -> None:
    token = sign_jwt(CLAIMS, KEY, typ="JWT")
    jws = JWS()
    jws.deserialize(token)
    jws.verify(JWK(**KEY.public_jwk()))
    assert json.loads(jws.payload) == CLAIMS
    decoded = pyjwt.decode(
        token,
        KEY.public_key(),
        algorithms=["EdDSA"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded == CLAIMS


def test_rfc9864_ed25519_alg_is_accepted() -> None:
    assert ALLOWED_ALGS == ("EdDSA", "Ed25519")
    jws = JWS(json.dumps(CLAIMS).encode())
    jws.add_signature(
        JWK.from_pyca(KEY.private_key),
        alg="Ed25519",
        protected=json.dumps({"alg": "Ed25519", "typ": "JWT", "kid": KEY.kid}),
    )
    verified = _decode(jws.serialize(compact=True))
    assert verified.header["alg"] == "Ed25519"
    assert verified.claims == CLAIMS


def test_extra_headers_cannot_override_fixed_members() -> None:
    for name in ("alg", "typ", "kid", "crit", "b64"):
        with pytest.raises(InvalidInput):
            sign_jwt(CLAIMS, KEY, typ="JWT", extra_headers={name: "none"})


# --- attacks: algorithm confusion -------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "", None])
def test_alg_none_is_rejected(alg: Any) -> None:
    seen: list[Any] = []

    def resolver(header: Any) -> Any:
        seen.append(header)
        return KEY.public_key()

    token = _token({"alg": alg, "typ": "JWT", "kid": KEY.kid}, CLAIMS, signed=False)
    assert _code(token, resolve_key=resolver) == "alg-not-allowed"
    assert seen == []  # the resolver never saw a token with a bad alg


def test_hs256_with_the_public_key_as_secret_is_rejected() -> None:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": KEY.kid}
    for secret in (raw, pem, KEY.public_jwk()["x"].encode()):
        signing_input = f"{_b64json(header)}.{_b64json(CLAIMS)}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert _code(f"{signing_input}.{b64url_encode(mac)}") == "alg-not-allowed"


def test_rs256_and_es256_tokens_are_rejected() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    headers = {"kid": KEY.kid, "typ": "JWT"}
    for alg, private in (("RS256", rsa_key), ("PS256", rsa_key), ("ES256", ec_key)):
        token = pyjwt.encode(CLAIMS, private, algorithm=alg, headers=headers)
        assert _code(token) == "alg-not-allowed"


def test_resolver_returning_a_non_ed25519_key_is_refused() -> None:
    ed448 = Ed448PrivateKey.generate()
    token = sign_jwt(CLAIMS, KEY, typ="JWT")
    assert _code(token, resolve_key=lambda _h: ed448.public_key()) == "unknown-key"


def test_unknown_kid_is_rejected_by_the_resolver() -> None:
    other = SigningKey.generate()
    assert _code(sign_jwt(CLAIMS, other, typ="JWT")) == "unknown-key"


def test_signature_by_another_key_under_our_kid() -> None:
    impostor = SigningKey(kid=KEY.kid, private_key=Ed25519PrivateKey.generate())
    assert _code(sign_jwt(CLAIMS, impostor, typ="JWT")) == "bad-signature"


# --- attacks: tampering and parsing ---------------------------------------------------


def test_tampered_payload_is_rejected() -> None:
    header, _, signature = sign_jwt(CLAIMS, KEY, typ="JWT").split(".")
    forged = _b64json({**CLAIMS, "sub": "admin"})
    assert _code(f"{header}.{forged}.{signature}") == "bad-signature"


def test_tampered_signature_is_rejected() -> None:
    token = sign_jwt(CLAIMS, KEY, typ="JWT")
    head, _, sig = token.rpartition(".")
    raw = bytearray(b64url_decode(sig))
    raw[0] ^= 1
    assert _code(f"{head}.{b64url_encode(bytes(raw))}") == "bad-signature"
    assert _code(f"{head}.") == "bad-signature"
    assert _code(f"{head}.{sig}==") == "malformed"  # pyjwt alone would accept the padding
    assert _code(f"{head}.{sig}\n") == "malformed"


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!.e30.", "e30.e30", f"{_b64json([1])}.e30.", "e30.W10.AA"],
)
def test_malformed_tokens(token: str) -> None:
    assert _code(token) == "malformed"


def test_duplicate_claims_and_crit_are_rejected() -> None:
    header = _b64json({"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid})
    payload = b64url_encode(b'{"sub":"a","exp":1800000300,"sub":"admin"}')
    signing_input = f"{header}.{payload}"
    token = f"{signing_input}.{b64url_encode(KEY.private_key.sign(signing_input.encode()))}"
    assert _code(token) == "malformed"
    crit = _token({"alg": "EdDSA", "typ": "JWT", "kid": KEY.kid, "crit": ["exp"]}, CLAIMS)
    assert _code(crit) == "malformed"


def test_typ_is_checked() -> None:
    token = sign_jwt(CLAIMS, KEY, typ="dc+sd-jwt")
    assert _code(token, typ=("JWT",)) == "typ-mismatch"
    assert _code(token, typ="dc+sd-jwt+x") == "typ-mismatch"
    assert _decode(token, typ="dc+sd-jwt").claims == CLAIMS  # a bare string is one typ
    assert _decode(token, typ=None).claims == CLAIMS
    loud = _token({"alg": "EdDSA", "typ": "application/DC+SD-JWT", "kid": KEY.kid}, CLAIMS)
    assert _decode(loud, typ=("dc+sd-jwt",)).claims == CLAIMS  # RFC 7515 §4.1.9
    untyped = _token({"alg": "EdDSA", "kid": KEY.kid}, CLAIMS)
    assert _code(untyped) == "typ-mismatch"


# --- registered claims at `now` ---------------------------------------------------------


def test_expiry_with_leeway() -> None:
    assert _code(sign_jwt({**CLAIMS, "exp": int(NOW) - 31}, KEY, typ="JWT")) == "expired"
    assert _decode(sign_jwt({**CLAIMS, "exp": int(NOW) - 29}, KEY, typ="JWT"))
    token = sign_jwt({**CLAIMS, "exp": int(NOW)}, KEY, typ="JWT")
    assert _code(token, leeway=0) == "expired"


def test_not_before_and_issued_at_in_the_future() -> None:
    assert _code(sign_jwt({**CLAIMS, "nbf": int(NOW) + 60}, KEY, typ="JWT")) == "not-yet-valid"
    assert _code(sign_jwt({**CLAIMS, "iat": int(NOW) + 60}, KEY, typ="JWT")) == "not-yet-valid"
    assert _decode(sign_jwt({**CLAIMS, "nbf": int(NOW) + 20}, KEY, typ="JWT"))


def test_time_claims_must_be_numbers() -> None:
    for bad in ("1800000300", True, [1], {"t": 1}):
        assert _code(sign_jwt({**CLAIMS, "exp": bad}, KEY, typ="JWT")) == "malformed"


def test_audience_and_issuer() -> None:
    token = sign_jwt({**CLAIMS, "aud": ["https://a.example", "https://b.example"]}, KEY, typ="JWT")
    assert _decode(token, audience="https://b.example")
    assert _code(token, audience="https://c.example") == "audience-mismatch"
    assert _code(token) == "audience-mismatch"  # RFC 7519 §4.1.3: aud we are not in
    assert _code(sign_jwt(CLAIMS, KEY, typ="JWT"), audience="https://a.example") == "missing-claim"
    assert _code(sign_jwt({**CLAIMS, "aud": 7}, KEY, typ="JWT"), audience="x") == "malformed"
    plain = sign_jwt(CLAIMS, KEY, typ="JWT")
    assert _decode(plain, issuer="https://node.example")
    assert _code(plain, issuer="https://evil.example") == "issuer-mismatch"
    no_iss = {k: v for k, v in CLAIMS.items() if k != "iss"}
    assert _code(sign_jwt(no_iss, KEY, typ="JWT"), issuer="https://node.example") == "missing-claim"


def test_required_claims() -> None:
    no_exp = {k: v for k, v in CLAIMS.items() if k != "exp"}
    assert _code(sign_jwt(no_exp, KEY, typ="JWT")) == "missing-claim"
    assert _decode(sign_jwt(no_exp, KEY, typ="JWT"), require=()).claims == no_exp
    assert _code(sign_jwt(CLAIMS, KEY, typ="JWT"), require=("exp", "jti")) == "missing-claim"


def test_max_lifetime() -> None:
    token = sign_jwt({**CLAIMS, "exp": int(NOW) + 3600}, KEY, typ="JWT")
    assert _code(token, max_lifetime=300) == "lifetime-too-long"
    assert _decode(token, max_lifetime=3600)
    no_iat = {k: v for k, v in CLAIMS.items() if k != "iat"}
    assert _code(sign_jwt({**no_iat, "exp": int(NOW) + 900}, KEY, typ="JWT"), max_lifetime=300) == (
        "lifetime-too-long"
    )
