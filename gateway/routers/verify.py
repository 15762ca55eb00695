"""``POST /v1/verify``: verify a certificate issued at this node."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from exchange.certificates.online import verify_here
from exchange.errors import VerificationFailed
from gateway.deps import NodeDep
from gateway.problems import responses

router = APIRouter(tags=["verify"])


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential: str = Field(max_length=200_000)


class VerifyOut(BaseModel):
    valid: bool
    reason: str | None = Field(None, description="stable code of the single failure")
    detail: str | None = None
    issuer: str | None = None
    kid: str | None = None
    vct: str | None = None
    type: str | None = None
    certificate_id: str | None = None
    valid_from: int | None = None
    valid_until: int | None = None
    status: str | None = None
    disclosed: dict[str, Any] | None = None


@router.post(
    "/v1/verify",
    response_model=VerifyOut,
    responses=responses(400, 413),
    summary="Verify an SD-JWT VC: signature, typ, alg, window, disclosures, status",
)
async def verify(body: VerifyBody, node: NodeDep) -> VerifyOut:
    """`valid: true` with the disclosed claims, or `valid: false` with the one reason."""
    with node.reads() as session:
        try:
            v = verify_here(session, node, body.credential)
        except VerificationFailed as e:
            return VerifyOut(valid=False, reason=e.code, detail=e.detail)
    return VerifyOut(
        valid=True,
        issuer=v.issuer,
        kid=v.kid,
        vct=v.vct,
        type=v.type,
        certificate_id=v.certificate_id,
        valid_from=v.valid_from,
        valid_until=v.valid_until,
        status=v.status,
        disclosed=dict(v.disclosed),
    )
