"""``GET /v1/status-lists/{list}``: the signed Token Status List."""

from __future__ import annotations

from fastapi import APIRouter, Response

from exchange.status.service import list_token
from gateway.deps import NodeDep
from gateway.problems import responses

router = APIRouter(tags=["status"])


@router.get(
    "/v1/status-lists/{list_id}",
    summary="A Token Status List (application/statuslist+jwt)",
    response_class=Response,
    responses={
        **responses(404, s200={"content": {"application/statuslist+jwt": {}}}),
    },
)
async def status_list(list_id: int, node: NodeDep) -> Response:
    with node.reads() as session:
        key = node.keys.current(session, "node:status")
        token = list_token(
            session,
            list_id=list_id,
            base_url=node.base_url,
            key=key,
            now=node.clock.now(),
            ttl=node.settings.status_list_ttl,
        )
    return Response(
        token,
        media_type="application/statuslist+jwt",
        headers={"Cache-Control": "no-cache"},
    )
