"""Consents across nodes: verifying a home node's ``consent+jwt`` and its status.

The artefact travels with the request; any node verifies its signature against the home
node's keys in the federation file and its status against the home node's consent status
list, cached for the list's ``ttl``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.consent.service import CONSENT_TYP
from exchange.crypto.jws import decode_jwt
from exchange.errors import VerificationFailed
from exchange.federation.status_cache import StatusCache
from exchange.node import Node
from exchange.pull.service import ConsentTerms


def _home_key(node: Node, home: str, header: Mapping[str, Any],
              owner: str = "node:consent") -> Ed25519PublicKey:
    """Node ``home``'s public key ``kid``: this node's own (``owner``) or the federation file's."""
    if home == node.settings.node:
        with node.reads() as session:
            return node.keys.public_key(session, header.get("kid"), owner)
    assert node.federation is not None
    return node.federation.peer(home).key(header.get("kid"))


def _home_url(node: Node, home: str) -> str:
    if home == node.settings.node:
        return node.base_url
    assert node.federation is not None
    return node.federation.peer(home).base_url


@dataclass(frozen=True, slots=True)
class VerifiedArtefact:
    """A consent artefact whose home-node signature checked out (status not yet checked)."""

    terms: ConsentTerms
    status_uri: str
    status_idx: int


def verify_artefact(node: Node, artefact: str, home: str) -> VerifiedArtefact:
    """The terms of a consent signed by node ``home``; VerificationFailed otherwise.

    ``uses`` is 0 here: only the home node knows the count, and it enforces it.
    """
    # 1. Signature by the home node's key, typ consent+jwt, issuer = the home node.
    v = decode_jwt(artefact, lambda h: _home_key(node, home, h), typ=(CONSENT_TYP,),
                   now=node.clock.now(), issuer=_home_url(node, home),
                   require=("jti", "sub", "grantee", "purpose", "scope", "nbf", "exp",
                            "max_uses", "status"), leeway=0)
    c = v.claims
    # 2. Shapes.
    scope = c["scope"]
    if not (isinstance(scope, dict) and all(isinstance(k, str) and isinstance(x, list)
                                           for k, x in scope.items())):
        raise VerificationFailed("consent scope is malformed", code="malformed")
    for field in ("jti", "sub", "grantee", "purpose"):
        if not isinstance(c[field], str):
            raise VerificationFailed(f"consent {field} is malformed", code="malformed")
    uri, idx = status_reference(c)
    terms = ConsentTerms(
        id=c["jti"], subject=c["sub"], grantee=c["grantee"], national_item=c["purpose"],
        scope={k: [str(x) for x in v_] for k, v_ in scope.items()},
        valid_from=int(c["nbf"]), valid_until=int(c["exp"]), max_uses=int(c["max_uses"]),
        uses=0, active=True,
    )
    return VerifiedArtefact(terms, uri, idx)


def status_reference(artefact_claims: Mapping[str, Any]) -> tuple[str, int]:
    ref = artefact_claims.get("status")
    sl = ref.get("status_list") if isinstance(ref, dict) else None
    if not isinstance(sl, dict) or not isinstance(sl.get("uri"), str) \
            or not isinstance(sl.get("idx"), int):
        raise VerificationFailed("consent status reference is malformed", code="malformed")
    return sl["uri"], sl["idx"]


def consent_status(node: Node, cache: StatusCache, home: str, art: VerifiedArtefact) -> int:
    """The consent's status (0 active, 1 revoked) from its home node's list (cached, ttl)."""
    if not art.status_uri.startswith(_home_url(node, home) + "/v1/status-lists/"):
        raise VerificationFailed("the consent's status list is not its home node's",
                                 code="status-uri-mismatch")
    http = node.federation.http if node.federation is not None else None
    return cache.status(art.status_uri, art.status_idx, now=node.clock.now(), http=http,
                        resolve_key=lambda h: _home_key(node, home, h, "node:status"))
