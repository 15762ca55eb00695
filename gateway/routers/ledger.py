"""The access ledger: checkpoints, verifier key, proofs, receipts (public), entries (auditors).

The public read routes (checkpoint, vkey, inclusion proof, receipt) are ``async def``: the
checkpoint, vkey and receipt run their short read inline (one pooled connection, at most two
statements, usually none for the checkpoint: see :mod:`exchange.ledger.store`), cheaper than
the threadpool hop a ``def`` route costs; inclusion proofs are batched across concurrent
requests (:class:`_ProofBatch`). They take the node from ``request.app.state`` (a ``def``
dependency would hop too) and answer with bytes built by orjson; ``response_model`` still
documents the JSON shape.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from exchange.clients.model import SCOPE_AUDIT
from exchange.clients.service import require_scope
from exchange.crypto.encoding import b64_encode
from exchange.errors import ExchangeError
from exchange.ledger import service
from exchange.node import Node
from gateway.deps import NodeDep, PrincipalDep
from gateway.problems import responses

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])
_TEXT: dict[str, Any] = {"content": {"text/plain": {}}}
MAX_INDEX = 2**62


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


class _ProofBatch:
    """Inclusion proofs asked while the previous batch was being read, answered together.

    One batch at a time runs :func:`service.inclusion_proofs` (one pooled connection, at
    most one statement for all its stored hashes) on a worker thread, so the event loop keeps
    parsing requests and writing responses while the database answers; every ask that
    arrives meanwhile joins the next batch. Errors are per ask, as if each had been asked
    alone; a failure of the whole read (the database is down) is every ask's error."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._asks: list[tuple[int, int | None, asyncio.Future[tuple[int, list[bytes]]]]] = []
        self._busy = False

    def ask(self, index: int, size: int | None) -> asyncio.Future[tuple[int, list[bytes]]]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, list[bytes]]] = loop.create_future()
        self._asks.append((index, size, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start, loop)  # after the requests already runnable
        return fut

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        asks, self._asks = self._asks, []
        pending = loop.run_in_executor(
            None, service.inclusion_proofs, self._node, [(i, s) for i, s, _ in asks]
        )
        pending.add_done_callback(lambda done: self._done(loop, asks, done))

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        asks: list[tuple[int, int | None, asyncio.Future[tuple[int, list[bytes]]]]],
        done: asyncio.Future[list[tuple[int, list[bytes]] | ExchangeError]],
    ) -> None:
        if self._asks:
            self._start(loop)
        else:
            self._busy = False
        error = done.exception()
        for n, (_, _, fut) in enumerate(asks):
            if fut.done():  # the client went away
                continue
            if error is not None:
                fut.set_exception(error)
                continue
            result = done.result()[n]
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)


def _proofs(request: Request) -> _ProofBatch:
    state = request.app.state
    batch: _ProofBatch | None = getattr(state, "ledger_proof_batch", None)
    if batch is None:
        batch = state.ledger_proof_batch = _ProofBatch(_node(request))
    return batch


_JSON = "application/json"
_PLAIN = "text/plain; charset=utf-8"


class ProofOut(BaseModel):
    proof: list[str] = Field(description="standard base64 hashes, leaf side first")


class InclusionOut(ProofOut):
    index: int
    size: int


class ConsistencyOut(ProofOut):
    first: int
    second: int


class EntryOut(BaseModel):
    index: int
    leaf: str = Field(description="standard base64 of the exact bytes that were hashed")
    fields: dict[str, Any] = Field(description="the decoded leaf, for reading")


class EntriesOut(BaseModel):
    entries: list[EntryOut]


@router.get(
    "/checkpoint",
    response_class=Response,
    responses=responses(404, s200=_TEXT),
    summary="The latest signed checkpoint (C2SP tlog-checkpoint note)",
)
async def checkpoint(request: Request) -> Response:
    return Response(
        service.latest_checkpoint_note(_node(request)),
        media_type=_PLAIN,
        headers={"Cache-Control": "no-cache"},
    )


@router.get(
    "/vkey",
    response_class=Response,
    responses=responses(s200=_TEXT),
    summary="The C2SP verifier key of the ledger signing key",
)
async def vkey(request: Request) -> Response:
    return Response(service.verifier_key(_node(request)) + "\n", media_type=_PLAIN)


@router.get(
    "/proof/inclusion",
    response_model=InclusionOut,
    responses=responses(400, 404),
    summary="RFC 9162 §2.1.3 inclusion proof",
)
async def inclusion(
    request: Request,
    index: Annotated[int, Query(ge=0, le=MAX_INDEX)],
    size: Annotated[
        int | None, Query(ge=1, le=MAX_INDEX, description="default: latest checkpoint")
    ] = None,
) -> Response:
    size_used, proof = await _proofs(request).ask(index, size)
    # The same bytes (and key order) as InclusionOut's serialisation.
    body = {"proof": [b64_encode(h) for h in proof], "index": index, "size": size_used}
    return Response(orjson.dumps(body), media_type=_JSON)


@router.get(
    "/proof/consistency",
    response_model=ConsistencyOut,
    responses=responses(400, 404),
    summary="RFC 9162 §2.1.4 consistency proof",
)
def consistency(
    node: NodeDep,
    first: Annotated[int, Query(ge=1, le=MAX_INDEX)],
    second: Annotated[int, Query(ge=1, le=MAX_INDEX)],
) -> ConsistencyOut:
    proof = service.consistency_proof(node, first, second)
    return ConsistencyOut(first=first, second=second, proof=[b64_encode(h) for h in proof])


@router.get(
    "/receipts/{index}",
    response_class=Response,
    responses=responses(400, 404, s200=_TEXT),
    summary="A C2SP tlog-proof@v1 receipt for one entry",
)
async def receipt(request: Request, index: int) -> Response:
    if not 0 <= index <= MAX_INDEX:
        from exchange.errors import InvalidInput

        raise InvalidInput("index out of range", code="index-out-of-range")
    return Response(service.receipt(_node(request), index), media_type=_PLAIN)


@router.get(
    "/entries",
    response_model=EntriesOut,
    responses=responses(400, 401, 403),
    summary="Ledger entries [start, end), at most 1000 (auditors: scope ledger:audit)",
)
def entries(
    node: NodeDep,
    principal: PrincipalDep,
    start: Annotated[int, Query(ge=0, le=MAX_INDEX)],
    end: Annotated[int, Query(ge=1, le=MAX_INDEX)],
) -> EntriesOut:
    require_scope(principal, SCOPE_AUDIT)
    return EntriesOut(
        entries=[
            EntryOut(index=i, leaf=b64_encode(leaf), fields=orjson.loads(leaf))
            for i, leaf in service.entries(node, start, end)
        ]
    )
