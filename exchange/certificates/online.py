"""Resolvers for verifying credentials against this node's own keys and status lists."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from exchange.certificates.verify import (
    CheckedCredential,
    VerifiedCredential,
    check_credential,
    conclude,
)
from exchange.errors import ExchangeError, NotFound, VerificationFailed
from exchange.identifiers import validate_uscc
from exchange.keys.service import agency_owner
from exchange.node import Node
from exchange.status import service as status


@functools.lru_cache(maxsize=1024)
def _valid_uscc(uscc: str) -> bool:
    """Whether an issuer URL's USCC passes both check characters (asked on every verify)."""
    try:
        validate_uscc(uscc)
    except ExchangeError:
        return False
    return True


def check_here(session: Session | None, node: Node, credential: str) -> CheckedCredential:
    """Every check but the status, for a credential issued by an agency of this node.
    Without a ``session``, one is opened only if the issuer's key is not cached yet."""
    issuers = f"{node.base_url}/issuers/"

    def resolve_key(iss: str, header: Mapping[str, Any]) -> Ed25519PublicKey:
        if not iss.startswith(issuers):
            raise VerificationFailed(
                f"issuer {iss!r} is not known to this node", code="unknown-issuer"
            )
        uscc = iss[len(issuers) :]
        if not _valid_uscc(uscc):
            raise VerificationFailed("issuer URL holds no valid USCC", code="unknown-issuer")
        kid, owner = header.get("kid"), agency_owner(uscc)
        if session is not None:
            return node.keys.public_key(session, kid, owner)
        key = node.keys.cached_public_key(kid, owner)
        if key is not None:
            return key
        with node.reads() as reads:
            return node.keys.public_key(reads, kid, owner)

    return check_credential(
        credential, resolve_key=resolve_key, now=node.clock.now(), memo=node.check_memo
    )


def status_entry(node: Node, checked: CheckedCredential) -> tuple[int, int]:
    """(list id, index) of the credential's status in this node's lists."""
    lists = f"{node.base_url}/v1/status-lists/"
    uri = checked.status_uri
    list_part = uri[len(lists) :] if uri.startswith(lists) else ""
    if not list_part.isdigit():
        raise VerificationFailed(f"status list {uri!r} is not this node's", code="bad-status-claim")
    return int(list_part), checked.status_idx


def conclude_here(checked: CheckedCredential, value: int | NotFound) -> VerifiedCredential:
    """The verdict from this node's status entry (or its absence)."""
    if isinstance(value, NotFound):
        raise VerificationFailed("status entry does not exist", code="bad-status-claim")
    return conclude(checked, value)


def verify_here(session: Session, node: Node, credential: str) -> VerifiedCredential:
    """Verify a credential issued by an agency of this node."""
    checked = check_here(session, node, credential)
    list_id, idx = status_entry(node, checked)
    try:
        value: int | NotFound = status.status_of(session, list_id, idx)
    except NotFound as e:
        value = e
    return conclude_here(checked, value)
