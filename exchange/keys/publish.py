"""What a node publishes about keys: its own JWKS and each agency's issuer metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from exchange.certificates.service import issuer_url
from exchange.errors import NotFound
from exchange.identifiers import validate_uscc
from exchange.keys.service import agency_owner
from exchange.node import Node
from exchange.persistence.models import Agency


def node_jwks(session: Session, node: Node) -> dict[str, Any]:
    """Every node key (token signing, status lists, consent, ledger), current and retired."""
    return {"keys": node.keys.published(session, "node:")}


def issuer_metadata(session: Session, node: Node, uscc: str) -> dict[str, Any]:
    """SD-JWT VC issuer metadata (``{"issuer", "jwks"}``) of a registered agency."""
    validate_uscc(uscc)
    if session.get(Agency, uscc) is None:
        raise NotFound(f"no issuing agency {uscc} at this node", code="issuer-not-found")
    keys = node.keys.published(session, agency_owner(uscc))
    return {"issuer": issuer_url(node.base_url, uscc), "jwks": {"keys": keys}}
