"""Issuing agencies: issue, read and change the status of certificates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from exchange.certificates import service
from exchange.errors import InvalidInput
from exchange.persistence.models import Certificate
from gateway.deps import NodeDep, PrincipalDep, UowDep
from gateway.problems import responses

router = APIRouter(prefix="/v1/certificates", tags=["certificates"])
ERRORS = responses(400, 401, 403, 404, 409, 413)


class IssueBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(max_length=64, examples=["business-license"])
    subject_id: str = Field(max_length=18, examples=["91350100M000100Y43"])
    claims: dict[str, Any]
    valid_from: str | None = Field(
        None,
        max_length=40,
        description="ISO 8601 date (00:00 China Standard Time) or datetime with offset",
    )
    valid_until: str | None = Field(None, max_length=40, examples=["2036-06-01"])


class IssuedOut(BaseModel):
    id: str
    credential: str = Field(description="the SD-JWT VC (issuer JWT ~ disclosures ~)")


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["valid", "suspended", "revoked"]
    reason: str = Field(min_length=1, max_length=500)


class CertificateOut(BaseModel):
    id: str
    type: str
    issuer: str
    subject_id: str
    status: str
    status_reason: str | None
    status_list: dict[str, Any]
    valid_from: int
    valid_until: int
    issued_at: int
    updated_at: int
    claims: dict[str, Any]
    credential: str


CST = timezone(timedelta(hours=8), "CST")


def parse_instant(v: str | None) -> int | None:
    """An ISO 8601 date (midnight China Standard Time) or an offset-aware datetime → epoch."""
    if v is None:
        return None
    try:
        parsed = datetime.fromisoformat(v)
    except ValueError as e:
        raise InvalidInput(f"{v!r} is not an ISO 8601 date or datetime", code="bad-validity") from e
    if len(v) == 10:
        parsed = parsed.replace(tzinfo=CST)
    if parsed.tzinfo is None:
        raise InvalidInput(
            "a datetime needs an offset, e.g. 2031-01-01T00:00:00+08:00", code="bad-validity"
        )
    return int(parsed.timestamp())


def _out(cert: Certificate, base_url: str) -> CertificateOut:
    from exchange.status.service import list_uri

    return CertificateOut(
        id=cert.id,
        type=cert.type,
        issuer=cert.issuer_uscc,
        subject_id=cert.subject_id,
        status=cert.status,
        status_reason=cert.status_reason,
        status_list={"idx": cert.status_idx, "uri": list_uri(base_url, cert.status_list)},
        valid_from=cert.valid_from,
        valid_until=cert.valid_until,
        issued_at=cert.issued_at,
        updated_at=cert.updated_at,
        claims=cert.claims,
        credential=cert.credential,
    )


@router.post("", status_code=201, response_model=IssuedOut, responses=ERRORS, summary="Issue")
async def issue(
    body: IssueBody, node: NodeDep, uow: UowDep, principal: PrincipalDep
) -> IssuedOut:
    """Issue a certificate of `type` to `subject_id` (an agency authorised for the type)."""
    req = service.IssueRequest(
        type=body.type,
        subject_id=body.subject_id,
        claims=body.claims,
        valid_from=parse_instant(body.valid_from),
        valid_until=parse_instant(body.valid_until),
    )
    cert = await uow.run(lambda session: service.issue(session, node, principal, req))
    return IssuedOut(id=cert.id, credential=cert.credential)


@router.get("/{cert_id}", response_model=CertificateOut, responses=ERRORS, summary="Read")
def read(cert_id: str, node: NodeDep, principal: PrincipalDep) -> CertificateOut:
    """The issuing agency's view of one of its own certificates."""
    with node.reads() as session:
        cert = service.get(session, principal, cert_id)
    return _out(cert, node.base_url)


@router.post(
    "/{cert_id}/status", response_model=CertificateOut, responses=ERRORS, summary="Set status"
)
async def set_status(
    cert_id: str, body: StatusBody, node: NodeDep, uow: UowDep, principal: PrincipalDep
) -> CertificateOut:
    """`valid` ↔ `suspended`; `revoked` is final. The status list reflects it at once."""
    cert = await uow.run(lambda session: service.set_status(
        session, node, principal, cert_id, body.status, body.reason))
    return _out(cert, node.base_url)
