"""``/v1/me/*``: a subject sees its certificates and who accessed its data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from exchange.subjects import me
from gateway.deps import NodeDep, SubjectDep
from gateway.problems import responses

router = APIRouter(prefix="/v1/me", tags=["subject"])


class MyCertificate(BaseModel):
    id: str
    type: str
    issuer: str
    status: str
    valid_from: int
    valid_until: int
    issued_at: int
    credential: str


class MyCertificates(BaseModel):
    certificates: list[MyCertificate]


@router.get("/certificates", response_model=MyCertificates, responses=responses(401),
            summary="The caller's own certificates")
def certificates(node: NodeDep, subject: SubjectDep) -> MyCertificates:
    with node.reads() as session:
        certs = me.my_certificates(session, subject)
    return MyCertificates(certificates=[
        MyCertificate(id=c.id, type=c.type, issuer=c.issuer_uscc, status=c.status,
                      valid_from=c.valid_from, valid_until=c.valid_until, issued_at=c.issued_at,
                      credential=c.credential)
        for c in certs
    ])


class AccessEntry(BaseModel):
    index: int
    time_ms: int
    kind: str
    actor: str
    actor_name: str | None
    item: str | None
    certificate: str | None
    consent: str | None
    outcome: str
    reason: str | None
    prev_subject: int | None
    leaf: str
    receipt: str | None
    peer_receipts: dict[str, str] = Field(
        default_factory=dict, description="province → the requesting node's receipt")


class AccessLog(BaseModel):
    entries: list[AccessEntry]


@router.get("/access-log", response_model=AccessLog, responses=responses(401),
            summary="Every ledger entry about the caller, newest first, with receipts")
def access_log(
    node: NodeDep,
    subject: SubjectDep,
    before: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=me.ACCESS_LOG_MAX)] = 100,
) -> AccessLog:
    with node.reads() as session:
        entries = me.access_log(session, node, subject, before=before, limit=limit)
    return AccessLog(
        entries=[AccessEntry.model_validate(e, from_attributes=True) for e in entries]
    )
