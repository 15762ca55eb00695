"""The national item catalog: ``GET /v1/items`` and ``GET /v1/items/{code}`` (一码通办)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from exchange.catalog import list_items, resolve_item, to_json
from exchange.identifiers.item_code import ItemCodeForm
from gateway.problems import responses

router = APIRouter(prefix="/v1/items", tags=["items"])
# The catalog is static data shipped with the node.
_CACHE = "public, max-age=300"


class RequirementOut(BaseModel):
    certificate_type: str = Field(examples=["business-license"])
    claims: list[str] = Field(description="the claims of this type the item needs")


class ItemOut(BaseModel):
    national_item: str = Field(description="main + sub item (8 characters)", examples=["18001000"])
    code: str = Field(description="the national basic code (region 00)", examples=["002018001000"])
    name: str = Field(examples=["企业银行开户"])
    name_en: str
    item_type: str = Field(description="GB/T 39554.1 item type", examples=["20"])
    item_type_name: str = Field(examples=["公共服务事项"])
    requirements: list[RequirementOut]


class ItemsOut(BaseModel):
    items: list[ItemOut]


class ResolvedFrom(BaseModel):
    form: ItemCodeForm
    code: str = Field(description="the code as asked for")


class ResolvedItemOut(ItemOut):
    resolved_from: ResolvedFrom


CodeParam = Annotated[
    str,
    Path(
        description="a basic (12), implementation (31) or handling (33) item code, any province",
        examples=["442018001000"],
    ),
]


@router.get("", response_model=ItemsOut, summary="The national item catalog")
def items(response: Response) -> ItemsOut:
    """Every national item with the certificate types, and claims of each, it requires."""
    response.headers["Cache-Control"] = _CACHE
    return ItemsOut.model_validate({"items": [to_json(i) for i in list_items()]})


@router.get(
    "/{code}",
    response_model=ResolvedItemOut,
    responses=responses(400, 404),
    summary="Resolve an item code to its national item",
)
def item(code: CodeParam, response: Response) -> ResolvedItemOut:
    """Any form of item code, from any province, resolves to the one national item."""
    resolved = resolve_item(code)
    response.headers["Cache-Control"] = _CACHE
    return ResolvedItemOut.model_validate(
        {**to_json(resolved.item), "resolved_from": {"form": resolved.code.form, "code": code}}
    )
