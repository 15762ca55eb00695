"""The access ledger: checkpoints, verifier key, proofs, receipts (public), entries (auditors).

The public read routes (checkpoint, vkey, inclusion proof, receipt) are ``async def``: the
checkpoint, vkey and receipt run their short read inline (one pooled connection, at most two
statements, usually none for the checkpoint: see :mod:`exchange.ledger.readcache`), cheaper
than the threadpool hop a ``def`` route costs; inclusion proofs are batched across concurrent
requests (:class:`gateway.batching.Batcher`), or answered on the loop when the read cache
holds every hash they need. They take the node from ``request.app.state``
and answer with bytes built by orjson; ``response_model`` still documents the JSON shape.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from exchange.clients.model import SCOPE_AUDIT
from exchange.clients.service import require_scope
from exchange.crypto.encoding import b64_encode
from exchange.ledger import service
from exchange.node import Node
from gateway.batching import Batcher
from gateway.deps import NodeDep, PrincipalDep
from gateway.problems import responses

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])
_TEXT: dict[str, Any] = {"content": {"text/plain": {}}}
MAX_INDEX = 2**62


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


_Proof = tuple[int, list[bytes]]


def _proofs(request: Request) -> Batcher[tuple[int, int | None], _Proof]:
    """Inclusion proofs asked while the previous batch was being read, answered together
    by :func:`service.inclusion_proofs` (one pooled connection, at most one statement)."""
    state = request.app.state
    batch: Batcher[tuple[int, int | None], _Proof] | None = getattr(
        state, "ledger_proof_batch", None)
    if batch is None:
        node = _node(request)
        batch = state.ledger_proof_batch = Batcher(
            lambda asks: service.inclusion_proofs(node, asks))
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


def _int_param(name: str, minimum: int, description: str | None = None) -> dict[str, Any]:
    """The OpenAPI parameter FastAPI writes for ``Annotated[int, Query(ge=minimum,
    le=MAX_INDEX)]`` (``| None = None`` when it has a description: optional)."""
    schema: dict[str, Any] = {"maximum": MAX_INDEX, "minimum": minimum, "type": "integer"}
    if description is None:
        return {"in": "query", "name": name, "required": True,
                "schema": {**schema, "title": name.title()}}
    return {"description": description, "in": "query", "name": name, "required": False,
            "schema": {"anyOf": [schema, {"type": "null"}], "description": description,
                       "title": name.title()}}


_INDEX = TypeAdapter(Annotated[int, Field(ge=0, le=MAX_INDEX)])
_SIZE = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_INDEX)])


def _query_int(
    request: Request, name: str, adapter: TypeAdapter[int], required: bool
) -> int | None:
    """A query parameter validated as FastAPI validates a declared one: the same pydantic
    check, and the same errors (a RequestValidationError at ``("query", name)``)."""
    raw = request.query_params.get(name)
    if raw is None:
        if not required:
            return None
        raise RequestValidationError(
            [{"type": "missing", "loc": ("query", name), "msg": "Field required", "input": None}]
        )
    try:
        return adapter.validate_python(raw)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("query", name, *err["loc"])} for err in e.errors()]
        ) from None


@router.get(
    "/proof/inclusion",
    response_model=InclusionOut,
    responses=responses(400, 404),
    summary="RFC 9162 §2.1.3 inclusion proof",
    openapi_extra={"parameters": [
        _int_param("index", 0), _int_param("size", 1, "default: latest checkpoint")
    ]},
)
async def inclusion(request: Request) -> Response:
    # The two query parameters are read here rather than declared in the signature: the
    # busiest public route spent ~17 % of its time in FastAPI's parameter machinery. The
    # OpenAPI parameters above and the 400 problems are the ones declaring them gave
    # (tests/test_ledger_http.py compares both).
    index = _query_int(request, "index", _INDEX, required=True)
    size = _query_int(request, "size", _SIZE, required=False)
    assert index is not None
    # Answered on the loop when every hash is cached; else batched onto a worker thread.
    cached = service.cached_inclusion_proof(_node(request), index, size)
    size_used, proof = cached or await _proofs(request).ask((index, size))
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
