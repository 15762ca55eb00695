"""Offline verification (``certex verify``): keys and status from files, no node contacted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.certificates.verify import VerifiedCredential, verify_credential
from exchange.clock import SystemClock
from exchange.crypto.jwk import public_key_from_jwk
from exchange.errors import InvalidInput, VerificationFailed
from exchange.status.codec import read_status


def _keys(documents: Sequence[Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(issuer or None, jwk) from issuer-metadata documents and bare JWKS files."""
    found: list[tuple[str | None, dict[str, Any]]] = []
    for doc in documents:
        if not isinstance(doc, dict):
            raise InvalidInput("a --jwks file must hold a JSON object")
        issuer = doc.get("issuer") if isinstance(doc.get("issuer"), str) else None
        jwks = doc.get("jwks", doc)
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(keys, list):
            raise InvalidInput("a --jwks file must hold {'keys': [...]} or issuer metadata")
        found.extend((issuer, k) for k in keys if isinstance(k, dict))
    return found


def verify_offline(
    credential: str, key_documents: Sequence[Any], status_token: str | None
) -> VerifiedCredential:
    """Verify with keys from files; status from a ``statuslist+jwt`` file if one is given."""
    keys = _keys(key_documents)

    def find(kid: object, issuer: str | None) -> Ed25519PublicKey:
        for iss, jwk in keys:
            if jwk.get("kid") == kid and (issuer is None or iss in (None, issuer)):
                return public_key_from_jwk(jwk)
        raise VerificationFailed(f"no key {kid!r} in the given JWKS files", code="unknown-key")

    def status_of(uri: str, idx: int) -> int | None:
        if status_token is None:
            return None
        return read_status(
            status_token,
            lambda h: find(h.get("kid"), None),
            idx=idx,
            uri=uri,
            now=SystemClock().now(),
        )

    def resolve(iss: str, header: Mapping[str, Any]) -> Ed25519PublicKey:
        return find(header.get("kid"), iss)

    return verify_credential(
        credential, resolve_key=resolve, status_of=status_of, now=SystemClock().now()
    )
