"""Subjects grant, list and revoke consents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from exchange.consent import service
from exchange.persistence.models import Consent
from exchange.status.service import list_uri
from gateway.deps import NodeDep, SubjectDep, UowDep
from gateway.problems import responses
from gateway.routers.certificates import parse_instant

router = APIRouter(prefix="/v1/consents", tags=["consent"])


class GrantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grantee: str = Field(max_length=80, description="the relying party's client id")
    item_code: str = Field(max_length=33, description="basic, implementation or handling code")
    valid_until: str = Field(max_length=40, description="ISO 8601; at most one year ahead")
    max_uses: int = Field(ge=1, le=service.MAX_USES)
    certificate_types: list[str] | None = Field(None, max_length=20)
    claims: dict[str, list[str]] | None = Field(
        None, description="per type, the claims covered; default: what the item needs"
    )


class ConsentOut(BaseModel):
    id: str
    grantee: str
    item: str
    item_code: str
    scope: dict[str, list[str]]
    valid_from: int
    valid_until: int
    max_uses: int
    uses: int
    status: str
    status_list: dict[str, Any]
    artefact: str = Field(description="the signed consent+jwt")


def _out(c: Consent, base_url: str) -> ConsentOut:
    return ConsentOut(
        id=c.id, grantee=c.grantee, item=c.national_item, item_code=c.item_code, scope=c.scope,
        valid_from=c.valid_from, valid_until=c.valid_until, max_uses=c.max_uses, uses=c.uses,
        status=c.status,
        status_list={"idx": c.status_idx, "uri": list_uri(base_url, c.status_list)},
        artefact=c.artefact,
    )


@router.post("", status_code=201, response_model=ConsentOut,
             responses=responses(400, 401, 404, 413), summary="Grant a consent")
async def grant(body: GrantBody, node: NodeDep, uow: UowDep, subject: SubjectDep) -> ConsentOut:
    """Defaults to exactly what the item needs; claims it does not need are refused."""
    until = parse_instant(body.valid_until)
    assert until is not None
    req = service.GrantRequest(grantee=body.grantee, item_code=body.item_code, valid_until=until,
                               max_uses=body.max_uses, certificate_types=body.certificate_types,
                               claims=body.claims)
    consent = await uow.run(lambda session: service.grant(session, node, subject, req))
    return _out(consent, node.base_url)


class ConsentList(BaseModel):
    consents: list[ConsentOut]


@router.get("", response_model=ConsentList, responses=responses(401),
            summary="The caller's own consents")
def list_own(node: NodeDep, subject: SubjectDep) -> ConsentList:
    with node.reads() as session:
        consents = service.list_own(session, subject)
    return ConsentList(consents=[_out(c, node.base_url) for c in consents])


@router.delete("/{consent_id}", status_code=204, response_class=Response,
               responses=responses(401, 404), summary="Revoke a consent, effective at once")
async def revoke(consent_id: str, node: NodeDep, uow: UowDep, subject: SubjectDep) -> Response:
    await uow.run(lambda session: service.revoke(session, node, subject, consent_id))
    return Response(status_code=204)
