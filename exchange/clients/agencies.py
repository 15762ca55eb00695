"""Issuing agencies: an agency is a client (id = its USCC) plus signing keys held by the node."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from exchange.certificates.types import get_type
from exchange.clients.service import register_client
from exchange.errors import Conflict, InvalidInput
from exchange.identifiers import validate_uscc
from exchange.keys.service import agency_owner
from exchange.node import Node
from exchange.persistence.models import Agency


def register_agency(
    session: Session,
    node: Node,
    *,
    uscc: str,
    name: str,
    types: Sequence[str],
    jwk: Mapping[str, Any],
) -> Agency:
    """Register an issuing agency authorised for ``types``; generates its first signing key."""
    validate_uscc(uscc)
    if not name.strip():
        raise InvalidInput("agency name must not be empty")
    if not types:
        raise InvalidInput("an agency needs at least one certificate type")
    for t in types:
        get_type(t)
    if session.get(Agency, uscc) is not None:
        raise Conflict(f"agency {uscc} already exists", code="agency-exists")
    now = node.clock.now()
    agency = Agency(
        uscc=uscc, name=name, types=sorted(set(types)), created_at=datetime.fromtimestamp(now, UTC)
    )
    session.add(agency)
    session.flush()
    register_client(
        session, client_id=uscc, name=name, kind="agency", jwk=jwk, agency_uscc=uscc, now=now
    )
    node.keys.create(session, agency_owner(uscc))
    return agency
