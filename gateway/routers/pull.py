"""``POST /v1/pull``: a relying party pulls a subject's certificates under a consent."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from exchange.ledger.service import receipts
from exchange.node import Node
from exchange.pull.flow import run_pull_async
from exchange.pull.service import PullRequest
from gateway.batching import Batcher
from gateway.deps import NodeDep, PrincipalDep
from gateway.problems import responses

router = APIRouter(tags=["pull"])


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(max_length=18)
    item_code: str = Field(max_length=33)
    consent_id: str = Field(max_length=64)
    holder: str | None = Field(
        None, pattern=r"^[0-9]{2}$",
        description="province holding the certificates (default: the subject's home node)")
    request_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]{8,64}$",
        description="idempotency key for a cross-province retry")


class PulledCredential(BaseModel):
    type: str
    credential: str = Field(description="SD-JWT presentation: issuer JWT + permitted disclosures")


class PullOut(BaseModel):
    credentials: list[PulledCredential]
    receipt: str = Field(description="C2SP tlog-proof@v1 for this access's ledger entry")
    ledger_index: int
    receipts: dict[str, str] = Field(
        description="province → that node's tlog-proof@v1 receipt (this node's included)")


@router.post(
    "/v1/pull",
    response_model=PullOut,
    responses=responses(400, 401, 403, 404, 413, 502, 503, 504),
    summary="Pull certificates for an item, under the subject's consent",
)
async def pull(
    body: PullBody, request: Request, node: NodeDep, principal: PrincipalDep
) -> PullOut:
    """Every attempt is logged first; a denial is a 403/404 problem with `ledger_index`.

    Across provinces this node checks the consent at the subject's home node, logs the
    request, and forwards it, signed, to the holding node; `receipts` then holds both."""
    req = PullRequest(body.subject_id, body.item_code, body.consent_id)
    out = await run_pull_async(node, principal, req, holder=body.holder,
                               request_id=body.request_id, receipt_of=_receipts(request).ask)
    return PullOut(
        credentials=[PulledCredential(**c) for c in out.credentials],
        receipt=out.receipt,
        ledger_index=out.ledger_index,
        receipts=out.receipts,
    )


def _receipts(request: Request) -> Batcher[int, str]:
    """Receipts of concurrent pulls, read together (one statement for all their hashes)."""
    state = request.app.state
    batch: Batcher[int, str] | None = getattr(state, "pull_receipt_batch", None)
    if batch is None:
        node: Node = state.node
        batch = state.pull_receipt_batch = Batcher(lambda idx: receipts(node, idx))
    return batch
