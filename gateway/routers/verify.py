"""``POST /v1/verify``: verify a certificate issued at this node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from exchange.certificates.online import check_here, conclude_here, status_entry
from exchange.errors import NotFound, VerificationFailed
from exchange.node import Node
from exchange.status.service import statuses_of
from gateway.batching import Batcher
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
async def verify(body: VerifyBody, request: Request) -> VerifyOut:
    """`valid: true` with the disclosed claims, or `valid: false` with the one reason.

    The signature and every other check run on the event loop; the status entries of
    concurrent requests are then read together, in one statement on a worker thread."""
    node: Node = request.app.state.node
    try:
        checked = check_here(None, node, body.credential)  # reads only an uncached key
        entry = status_entry(node, checked)
        try:
            value: int | NotFound = await _statuses(request).ask(entry)
        except NotFound as e:  # the batch answers a missing entry with NotFound
            value = e
        v = conclude_here(checked, value)
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


def _statuses(request: Request) -> Batcher[tuple[int, int], int]:
    state = request.app.state
    batch: Batcher[tuple[int, int], int] | None = getattr(
        state, "status_entry_batch", None)
    if batch is None:
        node: Node = state.node

        def fetch(entries: list[tuple[int, int]]) -> Sequence[int | Exception]:
            with node.reads() as session:
                return statuses_of(session, entries)

        batch = state.status_entry_batch = Batcher(fetch)
    return batch
