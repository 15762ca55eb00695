"""Frozen domain objects for authenticated callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ClientKind = Literal["agency", "bank", "auditor"]
CLIENT_KINDS: tuple[ClientKind, ...] = ("agency", "bank", "auditor")

SCOPE_ISSUE = "certificates:issue"
SCOPE_STATUS = "certificates:status"
SCOPE_READ = "certificates:read"
SCOPE_PULL = "pull"
SCOPE_AUDIT = "ledger:audit"

SCOPES_BY_KIND: dict[ClientKind, tuple[str, ...]] = {
    "agency": (SCOPE_ISSUE, SCOPE_STATUS, SCOPE_READ),
    "bank": (SCOPE_PULL,),
    "auditor": (SCOPE_AUDIT,),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """A client whose node access token has been verified."""

    client_id: str
    kind: ClientKind
    scopes: frozenset[str]
    agency_uscc: str | None
    token_exp: int


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A freshly minted node access token."""

    token: str
    expires_in: int
    scope: str
