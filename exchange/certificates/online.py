"""Resolvers for verifying credentials against this node's own keys and status lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from exchange.certificates.verify import VerifiedCredential, verify_credential
from exchange.errors import NotFound, VerificationFailed
from exchange.identifiers import validate_uscc
from exchange.keys.service import agency_owner
from exchange.node import Node
from exchange.status import service as status


def verify_here(session: Session, node: Node, credential: str) -> VerifiedCredential:
    """Verify a credential issued by an agency of this node."""
    issuers = f"{node.base_url}/issuers/"
    lists = f"{node.base_url}/v1/status-lists/"

    def resolve_key(iss: str, header: Mapping[str, Any]) -> Ed25519PublicKey:
        if not iss.startswith(issuers):
            raise VerificationFailed(
                f"issuer {iss!r} is not known to this node", code="unknown-issuer"
            )
        uscc = iss[len(issuers) :]
        try:
            validate_uscc(uscc)
        except Exception as e:
            raise VerificationFailed("issuer URL holds no valid USCC", code="unknown-issuer") from e
        return node.keys.public_key(session, header.get("kid"), agency_owner(uscc))

    def status_of(uri: str, idx: int) -> int:
        list_part = uri[len(lists) :] if uri.startswith(lists) else ""
        if not list_part.isdigit():
            raise VerificationFailed(
                f"status list {uri!r} is not this node's", code="bad-status-claim"
            )
        try:
            return status.status_of(session, int(list_part), idx)
        except NotFound as e:
            raise VerificationFailed("status entry does not exist", code="bad-status-claim") from e

    return verify_credential(
        credential, resolve_key=resolve_key, status_of=status_of, now=node.clock.now()
    )
