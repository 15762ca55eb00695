"""Signed node-to-node requests: a JWT over the exact request body (DESIGN.md §6).

The requesting node signs ``{iss: its province, aud: the peer's base URL, iat, exp (≤ 60 s),
jti, body_sha256}`` with its token key (``typ: fed+jwt``); the receiving node checks that the
issuer is a listed peer, the signature against the federation file's keys, the audience,
the window, the body hash, and that the ``jti`` was never seen before.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from exchange.crypto.jws import decode_jwt, sign_jwt, unverified_claims
from exchange.errors import (
    AuthenticationFailed,
    ExchangeError,
    Forbidden,
    PeerUnavailable,
    VerificationFailed,
)
from exchange.federation.config import Federation
from exchange.node import Node
from exchange.persistence.models import UsedAssertion

FED_TYP = "fed+jwt"
FED_LIFETIME = 60
HEADER = "X-Certex-Federation"


def _federation(node: Node) -> Federation:
    if node.federation is None:
        raise Forbidden("this node has no federation file (CERTEX_FEDERATION)",
                        code="no-federation")
    return node.federation


def sign_request(node: Node, audience: str, body: bytes) -> str:
    """The request JWT for ``body`` sent to the peer at ``audience``."""
    now = int(node.clock.now())
    with node.reads() as session:
        key = node.keys.current(session, "node:token")
    claims = {"iss": node.settings.node, "aud": audience, "iat": now, "exp": now + FED_LIFETIME,
              "jti": secrets.token_urlsafe(18), "body_sha256": hashlib.sha256(body).hexdigest()}
    return sign_jwt(claims, key, typ=FED_TYP)


@dataclass(frozen=True, slots=True)
class PeerRequest:
    """A request whose peer signature, window, audience, body hash and jti all checked out."""

    province: str
    body: Mapping[str, Any]


def verify_request(session: Session, node: Node, token: str | None, body: bytes) -> PeerRequest:
    """Authenticate a peer node's request; records its jti in the caller's transaction."""
    fed = _federation(node)
    if not token:
        raise AuthenticationFailed(f"a signed {HEADER} header is required", code="missing-token")
    # 1. Which node claims to speak; only listed peers are considered at all.
    try:
        iss = unverified_claims(token).get("iss")
    except VerificationFailed as e:
        raise AuthenticationFailed("the federation request is not a JWT", code="malformed") from e
    peer = fed.peer(str(iss))
    # 2. Signature with the peer's listed keys, audience = this node, short window.
    try:
        verified = decode_jwt(token, lambda h: peer.key(h.get("kid")), typ=(FED_TYP,),
                              now=node.clock.now(), audience=node.base_url, issuer=peer.province,
                              require=("iss", "aud", "exp", "iat", "jti", "body_sha256"),
                              leeway=5, max_lifetime=FED_LIFETIME)
    except VerificationFailed as e:
        raise AuthenticationFailed(f"federation request rejected: {e.detail}", code=e.code) from e
    # 3. The JWT covers exactly this body.
    if verified.claims["body_sha256"] != hashlib.sha256(body).hexdigest():
        raise AuthenticationFailed("the body does not match the signed hash", code="body-mismatch")
    # 4. Never the same request twice.
    try:
        with session.begin_nested():
            session.add(UsedAssertion(client_id=f"peer:{peer.province}",
                                      jti=str(verified.claims["jti"])[:128],
                                      expires_at=int(verified.claims["exp"])))
    except IntegrityError as e:
        raise AuthenticationFailed("federation request replayed", code="replayed") from e
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise AuthenticationFailed("the body is not JSON", code="malformed") from e
    if not isinstance(parsed, dict):
        raise AuthenticationFailed("the body is not a JSON object", code="malformed")
    return PeerRequest(peer.province, parsed)


def call_peer(node: Node, province: str, path: str, payload: Mapping[str, Any],
              timeout: float = 8.0) -> dict[str, Any]:
    """POST a signed request to a listed peer; its JSON answer (2xx) or PeerUnavailable /
    the peer's problem re-raised as a Forbidden/NotFound-like ExchangeError."""
    peer = _federation(node).peer(province)
    body = orjson.dumps(dict(payload))
    headers = {HEADER: sign_request(node, peer.base_url, body),
               "Content-Type": "application/json"}
    try:
        r = _federation(node).http.post(peer.base_url + path, content=body, headers=headers,
                                        timeout=timeout)
    except httpx.TimeoutException as e:
        raise PeerUnavailable(f"node {province} did not answer in {timeout:.0f} s",
                              code="peer-timeout", province=province) from e
    except httpx.HTTPError as e:
        raise PeerUnavailable(f"node {province} is unreachable: {type(e).__name__}",
                              code="peer-unreachable", province=province) from e
    try:
        data = r.json()
    except ValueError as e:
        raise PeerUnavailable(f"node {province} answered {r.status_code} without JSON",
                              code="peer-bad-answer", province=province) from e
    if r.status_code >= 500:
        raise PeerUnavailable(f"node {province} failed: {data.get('detail', r.status_code)}",
                              code="peer-failed", province=province)
    if r.status_code >= 400:
        raise PeerRefused(data)
    if not isinstance(data, dict):
        raise PeerUnavailable(f"node {province} answered a non-object", code="peer-bad-answer")
    return data


class PeerRefused(ExchangeError):
    """A peer refused the request with a problem document (kept for the caller to map)."""

    code = "peer-refused"

    def __init__(self, problem: Mapping[str, Any]) -> None:
        type_ = str(problem.get("type", ""))
        super().__init__(str(problem.get("detail", "refused by peer")),
                         code=type_.rsplit(":", 1)[-1] or "peer-refused")
        self.problem = dict(problem)
        self.status = int(problem.get("status", 403))
