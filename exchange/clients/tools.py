"""Client-side helpers: a client's own Ed25519 JWK and RFC 7523 client assertions.

These run on the client's side (a bank's or agency's integration); the node never sees the
private JWK. They exist so the walk-through and tests need no other tooling.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.crypto.encoding import b64url_decode, b64url_encode
from exchange.crypto.jwk import jwk_thumbprint, public_jwk
from exchange.crypto.jws import SigningKey, sign_jwt
from exchange.errors import InvalidInput


def generate_client_jwk() -> tuple[dict[str, str], dict[str, str]]:
    """A new (private JWK, public JWK) pair with ``kid`` = RFC 7638 thumbprint."""
    key = Ed25519PrivateKey.generate()
    pub = public_jwk(key.public_key())
    kid = jwk_thumbprint(pub)
    d = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    private = {**pub, "d": b64url_encode(d), "kid": kid}
    return private, {**pub, "kid": kid}


def write_jwk_pair(private_path: Path, public_path: Path) -> dict[str, str]:
    private, public = generate_client_jwk()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(private, f)
    public_path.write_text(json.dumps(public, indent=2) + "\n")
    return public


def signing_key_from_private_jwk(jwk: Mapping[str, Any]) -> SigningKey:
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" not in jwk:
        raise InvalidInput("expected a private Ed25519 JWK (kty OKP, crv Ed25519, d)")
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(str(jwk["d"])))
    kid = str(jwk.get("kid") or jwk_thumbprint(public_jwk(key.public_key())))
    return SigningKey(kid=kid, private_key=key)


def client_assertion(
    key: SigningKey, *, client_id: str, token_url: str, now: float, lifetime: int = 120
) -> str:
    """An RFC 7523 client assertion: iss = sub = client id, aud = token URL, unique jti."""
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": int(now),
        "exp": int(now) + lifetime,
        "jti": secrets.token_urlsafe(18),
    }
    return sign_jwt(claims, key, typ="JWT")
