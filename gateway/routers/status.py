"""``GET /v1/status-lists/{list}``: the signed Token Status List."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request, Response

from exchange.errors import ExchangeError
from exchange.node import Node
from exchange.status.service import list_token
from gateway.batching import Batcher
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
async def status_list(list_id: int, request: Request) -> Response:
    """Built and signed from the entries as they are when the request is read: concurrent
    requests for one list share one read and one signature (never one that started before
    they arrived)."""
    token = await _lists(request).ask(list_id)
    return Response(
        token,
        media_type="application/statuslist+jwt",
        headers={"Cache-Control": "no-cache"},
    )


def _lists(request: Request) -> Batcher[int, str]:
    state = request.app.state
    batch: Batcher[int, str] | None = getattr(state, "status_list_batch", None)
    if batch is None:
        node: Node = state.node

        def fetch(list_ids: list[int]) -> Sequence[str | Exception]:
            built: dict[int, str | Exception] = {}
            with node.reads() as session:
                key = node.keys.current(session, "node:status")
                now = node.clock.now()
                for list_id in dict.fromkeys(list_ids):
                    try:
                        built[list_id] = list_token(
                            session, list_id=list_id, base_url=node.base_url, key=key,
                            now=now, ttl=node.settings.status_list_ttl)
                    except ExchangeError as e:
                        built[list_id] = e
            return [built[i] for i in list_ids]

        batch = state.status_list_batch = Batcher(fetch)
    return batch
