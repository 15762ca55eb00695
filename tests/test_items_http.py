"""GET /v1/items and GET /v1/items/{code} over the real app: the catalog, 一码通办 resolution,
and problem+json for malformed and unknown codes."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest
from fastapi import FastAPI

from exchange.catalog import list_items, to_json
from exchange.identifiers import generate_uscc

BANK_ACCOUNT_CODE = "002018001000"


def _paths(routes: Iterable[Any]) -> set[str]:
    """Route paths, looking inside included routers (FastAPI may keep them as one entry)."""
    out: set[str] = set()
    for route in routes:
        if isinstance(getattr(route, "path", None), str):
            out.add(route.path)
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out |= _paths(inner.routes)
    return out


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    """The real app, with the items router if gateway/app.py does not register it yet."""
    from gateway.routers import items

    if "/v1/items" not in _paths(app.routes):
        app.include_router(items.router)
    return app


def _problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["type"] == f"urn:certex:problem:{code}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def test_list_items(http) -> None:  # type: ignore[no-untyped-def]
    r = http.get("/v1/items")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "public" in r.headers["cache-control"]
    body = r.json()
    assert set(body) == {"items"}
    assert body["items"] == [to_json(i) for i in list_items()]
    assert len(body["items"]) >= 15
    bank = next(i for i in body["items"] if i["code"] == BANK_ACCOUNT_CODE)
    assert bank["name"] == "企业银行开户"
    assert bank["requirements"] == [
        {
            "certificate_type": "business-license",
            "claims": [
                "name",
                "legal_representative",
                "registered_capital",
                "address",
                "business_scope",
                "established_on",
            ],
        }
    ]


def test_get_item_by_national_basic_code(http) -> None:  # type: ignore[no-untyped-def]
    r = http.get(f"/v1/items/{BANK_ACCOUNT_CODE}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {
        "national_item": "18001000",
        "code": BANK_ACCOUNT_CODE,
        "name": "企业银行开户",
        "name_en": "Enterprise bank account opening",
        "item_type": "20",
        "item_type_name": "公共服务事项",
        "requirements": body["requirements"],
        "resolved_from": {"form": "basic", "code": BANK_ACCOUNT_CODE},
    }
    assert [r["certificate_type"] for r in body["requirements"]] == ["business-license"]


@pytest.mark.parametrize("province", ["11", "31", "44", "65"])
def test_provincial_basic_codes_resolve_to_the_national_item(http, province: str) -> None:  # type: ignore[no-untyped-def]
    code = province + BANK_ACCOUNT_CODE[2:]
    r = http.get(f"/v1/items/{code}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["national_item"] == "18001000"
    assert body["code"] == BANK_ACCOUNT_CODE
    assert body["resolved_from"] == {"form": "basic", "code": code}


def test_implementation_and_handling_codes_resolve(http) -> None:  # type: ignore[no-untyped-def]
    agency = generate_uscc(random.Random("items-http"), region="440100")
    implementation = f"{agency}3442018001000"
    for code, form in ((implementation, "implementation"), (implementation + "01", "handling")):
        r = http.get(f"/v1/items/{code}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["national_item"] == "18001000"
        assert body["resolved_from"] == {"form": form, "code": code}


def test_every_listed_item_resolves_by_its_code(http) -> None:  # type: ignore[no-untyped-def]
    for item in http.get("/v1/items").json()["items"]:
        r = http.get(f"/v1/items/{item['code']}")
        assert r.status_code == 200, r.text
        assert {k: v for k, v in r.json().items() if k != "resolved_from"} == item


@pytest.mark.parametrize(
    "code",
    [
        "18001000",  # a national item, not an item code
        "992018001000",  # no such province
        "00201800100y",
        "9131010012345678X13442018001000",  # implementation code with a bad USCC
        "%E4%BC%81%E4%B8%9A%E9%93%B6%E8%A1%8C",  # 企业银行 (Chinese text)
        "0" * 200,
    ],
)
def test_malformed_code_is_400_problem(http, code: str) -> None:  # type: ignore[no-untyped-def]
    body = _problem(http.get(f"/v1/items/{code}"), 400, "invalid-item-code")
    assert "item code" in body["detail"]


@pytest.mark.parametrize("code", ["002099999000", "442018001009"])
def test_unknown_item_is_404_problem(http, code: str) -> None:  # type: ignore[no-untyped-def]
    body = _problem(http.get(f"/v1/items/{code}"), 404, "unknown-item")
    assert code[4:] in body["detail"]


def test_main_item_with_sub_items_is_404_naming_them(http) -> None:  # type: ignore[no-untyped-def]
    body = _problem(http.get("/v1/items/31011000300Y"), 404, "unknown-item")
    assert body["sub_items"] == ["000110003001", "000110003003"]


def test_items_are_read_only(http) -> None:  # type: ignore[no-untyped-def]
    _problem(http.post("/v1/items", json={}), 405, "method-not-allowed")
    _problem(http.delete(f"/v1/items/{BANK_ACCOUNT_CODE}"), 405, "method-not-allowed")


def test_openapi_documents_both_routes_and_their_errors(http) -> None:  # type: ignore[no-untyped-def]
    paths = http.get("/openapi.json").json()["paths"]
    assert "200" in paths["/v1/items"]["get"]["responses"]
    one = paths["/v1/items/{code}"]["get"]
    assert {"200", "400", "404"} <= set(one["responses"])
