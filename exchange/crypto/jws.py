"""Compact JWS/JWT with Ed25519 only: signing, and verification that raises.

Signing builds the compact serialisation itself from ``canonical_json`` (RFC 7515 §7.1),
so the signed bytes are the project's canonical form. Verification uses pyjwt's ``PyJWS``
for the signature, on a private instance that knows exactly two algorithm names, ``EdDSA``
(RFC 8037) and ``Ed25519`` (RFC 9864, which pyjwt does not register itself), both bound to
pyjwt's ``OKPAlgorithm``; ``none``, HS*, RS*, ES* and PS* are not even registered there,
and the allowlist is checked again before any key is looked up. The registered claims are
checked here rather than by ``jwt.PyJWT``, because pyjwt reads the wall clock for
``exp``/``nbf``/``iat`` and the exchange passes time in (STYLE habit 8).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from jwt import PyJWS
from jwt.algorithms import OKPAlgorithm
from jwt.exceptions import InvalidAlgorithmError, InvalidSignatureError, PyJWTError
from jwt.types import SigOptions

from exchange.crypto.canonical import canonical_json, parse_json
from exchange.crypto.encoding import b64url_decode, b64url_encode
from exchange.crypto.jwk import ED25519_JWS_ALGS, jwk_thumbprint, public_jwk
from exchange.errors import InvalidInput, VerificationFailed

__all__ = [
    "ALLOWED_ALGS",
    "SIGNING_ALG",
    "SignatureChecked",
    "SigningKey",
    "VerifiedJWT",
    "check_claims",
    "decode_jwt",
    "resolve_by_kid",
    "sign_jwt",
    "verify_jwt_signature",
]

ALLOWED_ALGS: Final = ED25519_JWS_ALGS
"""The only JWS ``alg`` values any decode accepts."""
SIGNING_ALG: Final = "EdDSA"
"""The ``alg`` we sign with (the widely deployed RFC 8037 name)."""

# Header members a caller may not set through ``extra_headers``: they are fixed by
# ``sign_jwt`` itself, or would change how the token must be processed (RFC 7515 §4.1.11,
# RFC 7797).
_RESERVED_HEADERS: Final = frozenset({"alg", "typ", "kid", "crit", "b64"})


def _make_pyjws() -> PyJWS:
    jws = PyJWS(algorithms=["EdDSA"])
    jws.register_algorithm("Ed25519", OKPAlgorithm())
    return jws


_PYJWS: Final = _make_pyjws()
_PYJWS_OPTIONS: Final[SigOptions] = {"verify_signature": True, "enforce_minimum_key_length": True}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key and the ``kid`` it signs under."""

    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or not self.kid:
            raise InvalidInput("a signing key needs a non-empty kid", code="invalid-key")
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise InvalidInput("only Ed25519 signing keys are supported", code="invalid-key")

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key whose ``kid`` is the RFC 7638 thumbprint of its public JWK."""
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey, kid: str | None = None) -> SigningKey:
        """Wrap an existing key; ``kid`` defaults to its RFC 7638 thumbprint."""
        if kid is None:
            kid = jwk_thumbprint(public_jwk(private_key.public_key()))
        return cls(kid=kid, private_key=private_key)

    def public_key(self) -> Ed25519PublicKey:
        """The matching public key."""
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public JWK with ``kid``, for a JWKS."""
        return {**public_jwk(self.public_key()), "kid": self.kid}


@dataclass(frozen=True, slots=True)
class VerifiedJWT:
    """A JWT whose signature, header and registered claims have been checked."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SignatureChecked:
    """A JWT whose header and signature verified; its claims are NOT checked yet."""

    header: Mapping[str, Any]
    unchecked_claims: Mapping[str, Any]


def sign_jwt(
    claims: Mapping[str, Any],
    key: SigningKey,
    *,
    typ: str,
    extra_headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign ``claims`` as a compact JWS with header ``{alg: EdDSA, typ, kid}``."""
    if not isinstance(typ, str) or not typ:
        raise InvalidInput("typ must be a non-empty string", code="invalid-header")
    header: dict[str, Any] = {"alg": SIGNING_ALG, "typ": typ, "kid": key.kid}
    if extra_headers:
        clash = _RESERVED_HEADERS & extra_headers.keys()
        if clash:
            raise InvalidInput(f"header members {sorted(clash)} are fixed", code="invalid-header")
        header.update(extra_headers)
    signing_input = ".".join(
        (b64url_encode(canonical_json(header)), b64url_encode(canonical_json(dict(claims))))
    )
    signature = key.private_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def resolve_by_kid(
    keys: Mapping[str, Ed25519PublicKey],
) -> Callable[[Mapping[str, Any]], Ed25519PublicKey]:
    """A ``resolve_key`` for ``decode_jwt`` that looks the header's ``kid`` up in ``keys``."""

    def resolve(unverified_header: Mapping[str, Any]) -> Ed25519PublicKey:
        kid = unverified_header.get("kid")
        if not isinstance(kid, str) or kid not in keys:
            raise VerificationFailed("no key with this kid", code="unknown-key")
        return keys[kid]

    return resolve


def decode_jwt(
    token: str,
    resolve_key: Callable[[Mapping[str, Any]], Ed25519PublicKey],
    *,
    typ: Collection[str] | None,
    now: float,
    audience: str | None = None,
    issuer: str | None = None,
    require: Sequence[str] = ("exp",),
    leeway: float = 30,
    max_lifetime: float | None = None,
) -> VerifiedJWT:
    """Verify a compact JWS signed with Ed25519 and check its registered claims at ``now``.

    ``resolve_key`` gets the *unverified* header (after the alg allowlist and typ checks)
    and returns the issuer's key or raises ``VerificationFailed(code="unknown-key")``; it
    must choose among keys it already trusts, never take a key from the header itself.
    ``typ=None`` skips the typ check. A token with an ``aud`` claim is refused unless
    ``audience`` is given and listed (RFC 7519 §4.1.3).
    """
    signed = verify_jwt_signature(token, lambda header, _claims: resolve_key(header), typ=typ)
    check_claims(
        signed.unchecked_claims,
        now=now,
        leeway=leeway,
        audience=audience,
        issuer=issuer,
        require=require,
        max_lifetime=max_lifetime,
    )
    return VerifiedJWT(header=signed.header, claims=signed.unchecked_claims)


def _segment_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = parse_json(b64url_decode(segment))
    except InvalidInput as e:
        raise VerificationFailed(f"JWT {what} is not base64url JSON", code="malformed") from e
    if not isinstance(value, dict):
        raise VerificationFailed(f"JWT {what} is not a JSON object", code="malformed")
    return value


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, parsed strictly but NOT verified: only for choosing
    which keys to verify with. VerificationFailed(code="malformed") if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        raise VerificationFailed("not a compact JWS (three segments)", code="malformed")
    return _segment_object(parts[1], "payload")


def _normalise_typ(value: str) -> str:
    # RFC 7515 §4.1.9: media types compare case-insensitively, "application/" may be omitted.
    value = value.lower()
    return value.removeprefix("application/")


def verify_jwt_signature(
    token: str,
    resolve_key: Callable[[Mapping[str, Any], Mapping[str, Any]], Ed25519PublicKey],
    *,
    typ: Collection[str] | None,
) -> SignatureChecked:
    """Check the header and the Ed25519 signature only; the claims are NOT checked.

    Building block for ``decode_jwt`` and the SD-JWT verifier, which check the claims
    afterwards with ``check_claims``. ``resolve_key`` gets the unverified header and the
    unverified payload. Use ``decode_jwt`` unless you call ``check_claims`` yourself.
    """
    # 1. Parse strictly: three base64url segments, header and payload JSON objects without
    #    duplicate members (pyjwt would keep the last of a duplicate).
    if not isinstance(token, str) or token.count(".") != 2:
        raise VerificationFailed("not a compact JWS", code="malformed")
    header_segment, payload_segment, signature_segment = token.split(".")
    unverified_header = _segment_object(header_segment, "header")
    unverified_claims = _segment_object(payload_segment, "payload")
    try:  # pyjwt tolerates "=" padding here; one token must have exactly one spelling
        b64url_decode(signature_segment)
    except InvalidInput as e:
        raise VerificationFailed("JWS signature is not base64url", code="malformed") from e
    if "crit" in unverified_header:  # RFC 7515 §4.1.11: we understand no extensions
        raise VerificationFailed("critical header extensions are not supported", code="malformed")
    # 2. Algorithm allowlist, before anything else looks at the token.
    if unverified_header.get("alg") not in ALLOWED_ALGS:
        raise VerificationFailed("JWS alg not allowed", code="alg-not-allowed")
    # 3. Explicit type (RFC 8725 §3.11), so one kind of token cannot pass for another.
    if typ is not None:
        expected = {_normalise_typ(t) for t in ((typ,) if isinstance(typ, str) else typ)}
        actual = unverified_header.get("typ")
        if not isinstance(actual, str) or _normalise_typ(actual) not in expected:
            raise VerificationFailed("unexpected JWT typ", code="typ-mismatch")
    # 4. The key, chosen by the caller among keys it trusts.
    key = resolve_key(unverified_header, unverified_claims)
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationFailed("resolved key is not an Ed25519 key", code="unknown-key")
    # 5. The signature, by pyjwt, with the same allowlist.
    try:
        decoded = _PYJWS.decode_complete(
            token, key, algorithms=list(ALLOWED_ALGS), options=_PYJWS_OPTIONS
        )
    except InvalidSignatureError as e:
        raise VerificationFailed("JWS signature does not verify", code="bad-signature") from e
    except InvalidAlgorithmError as e:
        raise VerificationFailed("JWS alg not allowed", code="alg-not-allowed") from e
    except PyJWTError as e:
        raise VerificationFailed("malformed JWS", code="malformed") from e
    if decoded["payload"] != b64url_decode(payload_segment):  # pragma: no cover - invariant
        raise VerificationFailed("malformed JWS", code="malformed")
    return SignatureChecked(header=unverified_header, unchecked_claims=unverified_claims)


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VerificationFailed(f"{name} is not a NumericDate", code="malformed")
    return float(value)


def check_claims(
    claims: Mapping[str, Any],
    *,
    now: float,
    leeway: float = 30,
    audience: str | None = None,
    issuer: str | None = None,
    require: Sequence[str] = (),
    max_lifetime: float | None = None,
) -> None:
    """Check the registered claims (RFC 7519 §4.1) of a signature-checked JWT at ``now``."""
    for name in require:
        if claims.get(name) is None:
            raise VerificationFailed(f"missing required claim {name}", code="missing-claim")
    exp = _numeric_date(claims, "exp")
    nbf = _numeric_date(claims, "nbf")
    iat = _numeric_date(claims, "iat")
    if exp is not None and exp <= now - leeway:
        raise VerificationFailed("token has expired", code="expired")
    if nbf is not None and nbf > now + leeway:
        raise VerificationFailed("token is not yet valid", code="not-yet-valid")
    if iat is not None and iat > now + leeway:
        raise VerificationFailed("token was issued in the future", code="not-yet-valid")
    if max_lifetime is not None:
        if exp is None:
            raise VerificationFailed("missing required claim exp", code="missing-claim")
        start = iat if iat is not None else now
        if exp - start > max_lifetime:
            raise VerificationFailed("token lives too long", code="lifetime-too-long")
    if issuer is not None:
        if claims.get("iss") is None:
            raise VerificationFailed("missing required claim iss", code="missing-claim")
        if claims["iss"] != issuer:
            raise VerificationFailed("unexpected issuer", code="issuer-mismatch")
    _check_audience(claims.get("aud"), audience)


def _check_audience(aud: Any, audience: str | None) -> None:
    if audience is None:
        if aud is not None:
            raise VerificationFailed("token is meant for an audience", code="audience-mismatch")
        return
    if aud is None:
        raise VerificationFailed("missing required claim aud", code="missing-claim")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise VerificationFailed("aud is not a string or list of strings", code="malformed")
    if audience not in audiences:
        raise VerificationFailed("token is meant for another audience", code="audience-mismatch")
