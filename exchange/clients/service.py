"""Client registration and authentication: RFC 7523 ``private_key_jwt`` → node access token."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from exchange.clients.model import (
    CLIENT_KINDS,
    SCOPES_BY_KIND,
    AccessToken,
    ClientKind,
    Principal,
)
from exchange.crypto.jwk import jwk_thumbprint, public_key_from_jwk
from exchange.crypto.jws import decode_jwt, sign_jwt, unverified_claims
from exchange.errors import (
    AuthenticationFailed,
    Conflict,
    Forbidden,
    InvalidInput,
    VerificationFailed,
)
from exchange.node import Node
from exchange.persistence.models import Client, UsedAssertion

ASSERTION_MAX_AHEAD = 300  # seconds: an assertion may not be valid for longer than 5 minutes
ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105  RFC 9068 media type, not a secret


class OAuthError(Exception):
    """An RFC 6749 §5.2 error of the token endpoint (``error`` code + description)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def register_client(
    session: Session,
    *,
    client_id: str,
    name: str,
    kind: str,
    jwk: Mapping[str, Any],
    items: Sequence[str] = (),
    agency_uscc: str | None = None,
    now: float,
) -> Client:
    """Register a client with one public Ed25519 JWK (validated; private members refused)."""
    if kind not in CLIENT_KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(CLIENT_KINDS)}", code="invalid-kind")
    if not client_id or len(client_id) > 64 or not client_id.isascii() or ":" in client_id:
        raise InvalidInput("client id must be 1-64 ASCII characters without ':'")
    public_key_from_jwk(jwk)
    public = {k: jwk[k] for k in ("kty", "crv", "x")}
    public["kid"] = str(jwk.get("kid") or jwk_thumbprint(public))
    if session.get(Client, client_id) is not None:
        raise Conflict(f"client {client_id!r} already exists", code="client-exists")
    scopes = list(SCOPES_BY_KIND[kind])
    if items and "pull" not in scopes:
        scopes.append("pull")
    client = Client(
        id=client_id,
        name=name,
        kind=kind,
        jwks=[public],
        scopes=scopes,
        items=list(items),
        agency_uscc=agency_uscc,
        created_at=datetime.fromtimestamp(now, UTC),
    )
    session.add(client)
    session.flush()
    return client


def _unverified_claims(assertion: str) -> dict[str, Any]:
    try:
        return unverified_claims(assertion)
    except VerificationFailed as e:
        raise OAuthError("invalid_client", f"client_assertion is malformed: {e.detail}") from e


def exchange_assertion(
    session: Session, node: Node, *, assertion: str, scope: str | None
) -> AccessToken:
    """RFC 7523 §2.2/§3 client authentication, then a node-signed access token (RFC 9068)."""
    now = node.clock.now()
    # 1. Which client claims to be speaking (unverified until step 3).
    unverified_iss = _unverified_claims(assertion).get("iss")
    client = session.get(Client, unverified_iss) if isinstance(unverified_iss, str) else None
    if client is None:
        raise OAuthError("invalid_client", "unknown client")

    # 2. Its registered keys, by kid; only Ed25519 keys are ever registered.
    def resolve(header: Mapping[str, Any]) -> Ed25519PublicKey:
        for jwk in client.jwks:
            if header.get("kid") in (None, jwk.get("kid")):
                return public_key_from_jwk(jwk)
        raise VerificationFailed("no registered key has this kid", code="unknown-key")

    # 3. Signature, audience, issuer, expiry; every check spelled out.
    try:
        verified = decode_jwt(
            assertion,
            resolve,
            typ=None,
            now=now,
            audience=f"{node.base_url}/oauth2/token",
            issuer=client.id,
            require=("iss", "sub", "aud", "exp", "jti"),
            leeway=10,
        )
    except VerificationFailed as e:
        raise OAuthError("invalid_client", f"client assertion rejected: {e.detail}") from e
    claims = verified.claims
    # 4. RFC 7523 §3: sub is the client id; exp at most 5 minutes ahead.
    if claims.get("sub") != client.id:
        raise OAuthError("invalid_client", "assertion sub must equal the client id")
    exp = claims["exp"]
    if not isinstance(exp, int | float) or exp - now > ASSERTION_MAX_AHEAD:
        raise OAuthError("invalid_client", "assertion exp is more than 5 minutes ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
        raise OAuthError("invalid_client", "assertion jti must be a string of 8-128 characters")
    # 5. Scope: a subset of what the client is registered for (default: all of it).
    registered = set(client.scopes)
    requested = set(scope.split()) if scope else registered
    if not requested or not requested <= registered:
        raise OAuthError("invalid_scope", "scope exceeds what the client is registered for")
    # 6. jti never accepted twice: the primary key makes this exact across processes.
    session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < int(now) - 60))
    try:
        with session.begin_nested():
            session.add(UsedAssertion(client_id=client.id, jti=jti, expires_at=int(exp)))
    except IntegrityError as e:
        raise OAuthError("invalid_client", "assertion jti has been used before") from e
    # 7. Mint the access token.
    ttl = node.settings.access_token_ttl
    scope_str = " ".join(sorted(requested))
    token_claims: dict[str, Any] = {
        "iss": node.base_url,
        "aud": node.base_url,
        "sub": client.id,
        "client_id": client.id,
        "kind": client.kind,
        "scope": scope_str,
        "iat": int(now),
        "exp": int(now) + ttl,
        "jti": secrets.token_urlsafe(16),
    }
    if client.agency_uscc:
        token_claims["agency"] = client.agency_uscc
    with session.no_autoflush:
        key = node.keys.current(session, "node:token")
    return AccessToken(sign_jwt(token_claims, key, typ=ACCESS_TOKEN_TYP), ttl, scope_str)


class TokenVerifier:
    """Verifies node access tokens; a verified token is cached until it expires."""

    def __init__(self, node: Node, max_cached: int = 10_000) -> None:
        self._node = node
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._max = max_cached
        self._lock = threading.Lock()

    def verify(self, session: Session, token: str) -> Principal:
        """The principal of a valid access token; AuthenticationFailed otherwise."""
        now = self._node.clock.now()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit.token_exp > now:
            return hit
        try:
            verified = decode_jwt(
                token,
                lambda h: self._node.keys.public_key(session, h.get("kid"), "node:token"),
                typ=(ACCESS_TOKEN_TYP,),
                now=now,
                audience=self._node.base_url,
                issuer=self._node.base_url,
                require=("exp", "iat", "sub", "scope", "kind"),
                leeway=0,
            )
        except VerificationFailed as e:
            raise AuthenticationFailed(f"access token rejected: {e.detail}", code=e.code) from e
        c = verified.claims
        kind = c.get("kind")
        if kind not in CLIENT_KINDS or not isinstance(c.get("scope"), str):
            raise AuthenticationFailed("access token claims are malformed", code="malformed")
        principal = Principal(
            client_id=str(c["sub"]),
            kind=cast(ClientKind, kind),
            scopes=frozenset(str(c["scope"]).split()),
            agency_uscc=c.get("agency") if isinstance(c.get("agency"), str) else None,
            token_exp=int(c["exp"]),
        )
        with self._lock:
            self._cache[token] = principal
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return principal


def require_scope(principal: Principal, scope: str) -> None:
    """Forbidden unless the token carries ``scope``."""
    if scope not in principal.scopes:
        raise Forbidden(f"this operation needs scope {scope!r}", code="insufficient-scope")
