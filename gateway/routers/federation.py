"""Node-to-node endpoints. Every request carries a JWT signed by a listed peer's node key
over the exact body (``X-Certex-Federation``); see exchange/federation/messages.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from exchange.federation import service as fed
from exchange.federation.messages import HEADER, PeerRequest, verify_request
from exchange.persistence.models import FederationRequest
from exchange.pull.flow import holder_pull, serve_peer_pull
from gateway.deps import NodeDep, UowDep
from gateway.problems import responses

router = APIRouter(prefix="/v1/federation", tags=["federation"])
_BODY = {"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}}


async def _peer_call(request: Request, uow: Any,
                     work: Callable[[Session, PeerRequest], dict[str, Any]]) -> dict[str, Any]:
    body = await request.body()
    token = request.headers.get(HEADER)
    node = request.app.state.node

    def run() -> dict[str, Any]:
        with uow() as session:
            peer = verify_request(session, node, token, body)
            return work(session, peer)

    return await run_in_threadpool(run)


@router.post("/consent", responses=responses(400, 401, 403, 404), openapi_extra=_BODY,
             summary="Home node: a consent artefact for the node whose client it names")
async def consent(request: Request, node: NodeDep, uow: UowDep) -> dict[str, Any]:
    return await _peer_call(request, uow, lambda s, p: fed.serve_consent(s, node, p))


@router.post("/consent-use", responses=responses(400, 401, 403), openapi_extra=_BODY,
             summary="Home node: count one use of a consent (idempotent by request_id)")
async def consent_use(request: Request, node: NodeDep, uow: UowDep) -> dict[str, Any]:
    return await _peer_call(request, uow, lambda s, p: fed.serve_consent_use(s, node, p))


@router.post("/pull", responses=responses(400, 401, 403, 404, 503), openapi_extra=_BODY,
             summary="Holding node: re-check the consent, log the release, answer")
async def pull(request: Request, node: NodeDep, uow: UowDep) -> dict[str, Any]:
    body = await request.body()
    token = request.headers.get(HEADER)

    def run() -> dict[str, Any]:
        with uow() as session:
            peer = verify_request(session, node, token, body)
        with node.reads() as session:
            previous = session.get(FederationRequest, fed.holder_key(peer))
            answer = dict(previous.response) if previous is not None else None
        call = serve_peer_pull(node, peer, answer)
        return holder_pull(node, call)

    return await run_in_threadpool(run)
