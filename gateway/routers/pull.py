"""``POST /v1/pull``: a relying party pulls a subject's certificates under a consent."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from exchange.errors import ConsentDenied, NotFound
from exchange.pull import service
from gateway.deps import NodeDep, PrincipalDep, UowDep
from gateway.problems import responses

router = APIRouter(tags=["pull"])


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(max_length=18)
    item_code: str = Field(max_length=33)
    consent_id: str = Field(max_length=64)


class PulledCredential(BaseModel):
    type: str
    credential: str = Field(description="SD-JWT presentation: issuer JWT + permitted disclosures")


class PullOut(BaseModel):
    credentials: list[PulledCredential]
    receipt: str = Field(description="C2SP tlog-proof@v1 for this access's ledger entry")
    ledger_index: int


@router.post(
    "/v1/pull",
    response_model=PullOut,
    responses=responses(400, 401, 403, 404, 413, 503),
    summary="Pull certificates for an item, under the subject's consent",
)
def pull(body: PullBody, node: NodeDep, uow: UowDep, principal: PrincipalDep) -> PullOut:
    """Every attempt is logged first; a denial is a 403/404 problem with `ledger_index`."""
    req = service.PullRequest(body.subject_id, body.item_code, body.consent_id)
    with uow() as session:
        decision = service.decide(session, node, principal, req)
    index = uow.ledger_indices[-1]
    if not decision.granted:
        cls = NotFound if decision.not_found else ConsentDenied
        raise cls(decision.detail, code=decision.reason, ledger_index=index)
    result = service.release(node, decision, index)
    return PullOut(
        credentials=[PulledCredential(**c) for c in result.credentials],
        receipt=result.receipt,
        ledger_index=result.ledger_index,
    )
