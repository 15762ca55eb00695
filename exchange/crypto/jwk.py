"""Ed25519 public keys as JWKs (RFC 8037) and their RFC 7638 thumbprints.

The exchange signs with Ed25519 only, so this module accepts only ``kty: OKP`` with
``crv: Ed25519`` when turning a JWK into a key: every other key type is refused here,
before any signature code sees it (DESIGN §2 invariant 7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange.crypto.canonical import canonical_json
from exchange.crypto.encoding import b64url_decode, b64url_encode
from exchange.errors import InvalidInput

__all__ = ["ED25519_JWS_ALGS", "jwk_thumbprint", "public_jwk", "public_key_from_jwk"]

ED25519_JWS_ALGS: Final = ("EdDSA", "Ed25519")
"""JWS ``alg`` values meaning "Ed25519 signature": RFC 8037 ``EdDSA`` and RFC 9864 ``Ed25519``."""

# RFC 7638 §3.2 with RFC 8037 §2: the required members of an OKP key.
_OKP_REQUIRED: Final = ("crv", "kty", "x")
# Members that carry private key material (RFC 7517 §4, RFC 8037 §2).
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The RFC 8037 JWK of an Ed25519 public key: ``{"kty", "crv", "x"}``."""
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("only Ed25519 public keys are supported", code="invalid-jwk")
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) of an OKP JWK.

    Only the required members ``crv``, ``kty``, ``x`` are hashed, in lexicographic order
    and without whitespace (RFC 7638 §3.2, RFC 8037 §2); other members are ignored.
    """
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP":
        raise InvalidInput("thumbprints are supported for OKP keys only", code="invalid-jwk")
    members = {name: jwk.get(name) for name in _OKP_REQUIRED}
    if not all(isinstance(value, str) and value for value in members.values()):
        raise InvalidInput("an OKP JWK needs string crv and x members", code="invalid-jwk")
    # The member values are ASCII (a curve name and base64url), so the canonical JSON of
    # the three members is exactly the RFC 7638 form.
    return b64url_encode(hashlib.sha256(canonical_json(members)).digest())


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """The Ed25519 public key in ``jwk``; refuses every other key type and private JWKs."""
    if not isinstance(jwk, Mapping):
        raise InvalidInput("a JWK must be a JSON object", code="invalid-jwk")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidInput("JWK contains private key material", code="invalid-jwk")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise InvalidInput("only OKP Ed25519 keys are accepted", code="invalid-jwk")
    if "use" in jwk and jwk["use"] != "sig":
        raise InvalidInput("JWK is not a signature key", code="invalid-jwk")
    if "alg" in jwk and jwk["alg"] not in ED25519_JWS_ALGS:
        raise InvalidInput("JWK alg is not an Ed25519 signature algorithm", code="invalid-jwk")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise InvalidInput("JWK key_ops does not allow verify", code="invalid-jwk")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise InvalidInput("JWK x must be a string", code="invalid-jwk")
    try:
        raw = b64url_decode(x)
    except InvalidInput as e:
        raise InvalidInput("JWK x is not base64url", code="invalid-jwk") from e
    if len(raw) != 32:
        raise InvalidInput("an Ed25519 public key is 32 bytes", code="invalid-jwk")
    return Ed25519PublicKey.from_public_bytes(raw)
