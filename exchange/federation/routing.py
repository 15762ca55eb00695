"""Routing from the standard codes (DESIGN.md §6)."""

from __future__ import annotations

from exchange.errors import InvalidInput
from exchange.identifiers import PROVINCES, classify_subject_id


def home_province(subject_id: str) -> str:
    """The subject's home node: an enterprise's USCC registering region (chars 3–4), a
    person's resident-ID region (chars 1–2). Consents and use counts live there."""
    kind = classify_subject_id(subject_id)
    return subject_id[2:4] if kind == "enterprise" else subject_id[0:2]


def holding_province(subject_id: str, explicit: str | None) -> str:
    """Where the subject's certificates are held: as named, else the home node (an
    enterprise's licences are issued where it is registered)."""
    if explicit is not None:
        if explicit not in PROVINCES:
            raise InvalidInput(f"{explicit!r} is not a province code", code="invalid-region")
        return explicit
    return home_province(subject_id)


def parse_grantee(name: str, me: str) -> tuple[str, str]:
    """``"50:bank-cq-1"`` → ("50", "bank-cq-1"); a bare id is a client of this node."""
    if ":" in name:
        province, _, client = name.partition(":")
        if province not in PROVINCES or not client or ":" in client:
            raise InvalidInput(f"{name!r} is not <province>:<client id>", code="unknown-grantee")
        return province, client
    return me, name


def federated_name(province: str, client_id: str, me: str) -> str:
    """How a relying party is named in consents: bare at its own node, qualified elsewhere."""
    return client_id if province == me else f"{province}:{client_id}"
