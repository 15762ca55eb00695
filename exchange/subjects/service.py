"""Subject authentication: bearer JWTs from configured identity providers (and, in dev mode
only, the node's own dev IdP)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from exchange.crypto.jwk import public_key_from_jwk
from exchange.crypto.jws import ALLOWED_ALGS, decode_jwt, sign_jwt, unverified_claims
from exchange.errors import (
    AuthenticationFailed,
    Conflict,
    ExchangeError,
    Forbidden,
    InvalidInput,
    VerificationFailed,
)
from exchange.identifiers import SubjectKind, classify_subject_id
from exchange.node import Node
from exchange.persistence.models import IdentityProvider

DEV_IDP_OWNER = "node:dev-idp"
DEV_TOKEN_TTL = 3600
MAX_SUBJECT_TOKEN_LIFETIME = 24 * 3600


@dataclass(frozen=True, slots=True)
class Subject:
    """A citizen or enterprise whose identity-provider token has been verified."""

    subject_id: str
    kind: SubjectKind
    issuer: str


def dev_issuer(node: Node) -> str:
    return f"{node.base_url}/dev-idp"


def add_identity_provider(
    session: Session,
    *,
    issuer: str,
    jwks: Mapping[str, Any],
    algorithms: tuple[str, ...] = ("EdDSA",),
    now: float,
) -> IdentityProvider:
    """Trust ``issuer``'s keys for subject tokens (Ed25519 only: ``EdDSA``/``Ed25519``)."""
    if not issuer.startswith("https://") and not issuer.startswith("http://127.0.0.1"):
        raise InvalidInput("an identity provider's issuer must be an https URL", code="bad-issuer")
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise InvalidInput("jwks must be {'keys': [...]} with at least one key", code="bad-jwks")
    for k in keys:
        public_key_from_jwk(k)
        if not isinstance(k.get("kid"), str):
            raise InvalidInput("every identity-provider key needs a kid", code="bad-jwks")
    bad = [a for a in algorithms if a not in ALLOWED_ALGS]
    if bad or not algorithms:
        raise InvalidInput(f"algorithms must be among {', '.join(ALLOWED_ALGS)}", code="bad-alg")
    if session.get(IdentityProvider, issuer) is not None:
        raise Conflict(f"identity provider {issuer} already exists", code="idp-exists")
    idp = IdentityProvider(
        issuer=issuer,
        jwks={"keys": [dict(k) for k in keys]},
        algorithms=list(algorithms),
        created_at=datetime.fromtimestamp(now, UTC),
    )
    session.add(idp)
    session.flush()
    return idp


def issue_dev_token(session: Session, node: Node, subject_id: str, ttl: int = DEV_TOKEN_TTL) -> str:
    """A subject token from the dev IdP. Refused outside dev mode."""
    if not node.settings.dev:
        raise Forbidden("the dev IdP exists only in dev mode (CERTEX_DEV=1)", code="dev-mode-only")
    classify_subject_id(subject_id)
    now = int(node.clock.now())
    key = node.keys.current(session, DEV_IDP_OWNER)
    claims = {"iss": dev_issuer(node), "sub": subject_id, "aud": node.base_url,
              "iat": now, "exp": now + ttl}
    return sign_jwt(claims, key, typ="JWT")


def _unverified_iss(token: str) -> str:
    try:
        iss = unverified_claims(token).get("iss")
    except VerificationFailed as e:
        raise AuthenticationFailed(f"the subject token is malformed: {e.detail}",
                                   code="malformed") from e
    if not isinstance(iss, str):
        raise AuthenticationFailed("the subject token has no iss", code="malformed")
    return iss


def verify_subject_token(session: Session, node: Node, token: str) -> Subject:
    """Verify a subject's bearer token; AuthenticationFailed unless every check holds."""
    # 1. Which identity provider claims to have issued it (checked by its signature below).
    iss = _unverified_iss(token)
    if iss == dev_issuer(node):
        if not node.settings.dev:
            raise AuthenticationFailed("dev IdP tokens are refused outside dev mode",
                                       code="unknown-issuer")

        def resolve(header: Mapping[str, Any]) -> Ed25519PublicKey:
            return node.keys.public_key(session, header.get("kid"), DEV_IDP_OWNER)

        allowed: tuple[str, ...] = ALLOWED_ALGS
    else:
        idp = session.get(IdentityProvider, iss)
        if idp is None:
            raise AuthenticationFailed(f"issuer {iss!r} is not a trusted identity provider",
                                       code="unknown-issuer")
        keys = idp.jwks["keys"]

        def resolve(header: Mapping[str, Any]) -> Ed25519PublicKey:
            for k in keys:
                if k.get("kid") == header.get("kid"):
                    return public_key_from_jwk(k)
            raise VerificationFailed("no identity-provider key has this kid", code="unknown-key")

        allowed = tuple(idp.algorithms)
    # 2. Signature (alg allowlist), audience = this node, issuer, expiry.
    try:
        verified = decode_jwt(token, resolve, typ=None, now=node.clock.now(),
                              audience=node.base_url, issuer=iss,
                              require=("iss", "sub", "aud", "exp"), leeway=10,
                              max_lifetime=MAX_SUBJECT_TOKEN_LIFETIME)
    except VerificationFailed as e:
        raise AuthenticationFailed(f"subject token rejected: {e.detail}", code=e.code) from e
    if verified.header.get("alg") not in allowed:
        raise AuthenticationFailed("algorithm not allowed for this identity provider",
                                   code="alg-not-allowed")
    # 3. The subject is a valid resident ID or USCC.
    sub = verified.claims.get("sub")
    try:
        kind = classify_subject_id(sub if isinstance(sub, str) else "")
    except ExchangeError as e:
        raise AuthenticationFailed("the token's sub is not a resident ID or USCC",
                                   code="bad-subject") from e
    return Subject(subject_id=str(sub), kind=kind, issuer=iss)
