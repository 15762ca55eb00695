"""Public metadata: node JWKS, issuer metadata, the certificate-type registry, health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from exchange.certificates.types import REGISTRY
from exchange.keys.publish import issuer_metadata, node_jwks
from gateway.deps import NodeDep, UowDep
from gateway.problems import responses
from gateway.responses import JSONBody

router = APIRouter(tags=["metadata"])
_CACHE = {"Cache-Control": "public, max-age=60"}


@router.get("/.well-known/jwks.json", summary="The node's public keys")
def jwks(node: NodeDep) -> Any:
    with node.reads() as session:
        body = node_jwks(session, node)
    return JSONBody(body, headers=_CACHE)


@router.get(
    "/.well-known/jwt-vc-issuer/issuers/{uscc}",
    summary="SD-JWT VC issuer metadata of an agency (current and retired keys)",
    responses=responses(400, 404),
)
def issuer(uscc: str, node: NodeDep) -> Any:
    with node.reads() as session:
        body = issuer_metadata(session, node, uscc)
    return JSONBody(body, headers=_CACHE)


@router.get("/v1/certificate-types", summary="The certificate types this node can issue")
def certificate_types() -> Any:
    return {"types": [t.to_json() for t in REGISTRY.values()]}


@router.get("/healthz", summary="Liveness and database reachability", include_in_schema=True)
def healthz(uow: UowDep) -> Any:
    from sqlalchemy import text

    with uow() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok"}
