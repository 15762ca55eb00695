"""Look up national items by any form of item code (一码通办, DESIGN.md §3).

The catalog is static data (``seed.py``), indexed once at import into a read-only mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from exchange.catalog.model import CatalogItem, ResolvedItem
from exchange.catalog.seed import ITEMS
from exchange.errors import InvalidInput, NotFound
from exchange.identifiers.item_code import parse_item_code

_UNKNOWN = "unknown-item"


def _index(items: Iterable[CatalogItem]) -> Mapping[str, CatalogItem]:
    by_national: dict[str, CatalogItem] = {}
    for item in items:
        if item.national_item in by_national:
            raise InvalidInput(
                f"national item {item.national_item} is in the catalog twice",
                code="invalid-catalog-item",
            )
        by_national[item.national_item] = item
    return MappingProxyType(dict(sorted(by_national.items())))


_BY_NATIONAL_ITEM = _index(ITEMS)


def list_items() -> list[CatalogItem]:
    """Every national item, ordered by national item code."""
    return list(_BY_NATIONAL_ITEM.values())


def get_item(code: str) -> CatalogItem:
    """The national item of a basic (12), implementation (31) or handling (33) item code.

    The region, item type, implementing agency and level of ``code`` do not select the item:
    main + sub does, so a code listed by any province resolves to the same national item.
    A malformed code raises InvalidIdentifier; a well-formed code of an item not in the
    catalog raises NotFound (``unknown-item``).
    """
    return resolve_item(code).item


def resolve_item(code: str) -> ResolvedItem:
    """Like :func:`get_item`, keeping the parsed code (its form, region, agency, level)."""
    parsed = parse_item_code(code)
    item = _BY_NATIONAL_ITEM.get(parsed.national_item)
    if item is not None:
        return ResolvedItem(parsed, item)
    if parsed.sub == "00Y":
        # A main item that has sub items is not itself an item: name the ones that are.
        subs = [
            i.basic_code for i in _BY_NATIONAL_ITEM.values() if i.national_item[:5] == parsed.main
        ]
        if subs:
            raise NotFound(
                f"item {parsed.main} has sub items; ask for one of them: {', '.join(subs)}",
                code=_UNKNOWN,
                sub_items=subs,
            )
    raise NotFound(f"no national item {parsed.national_item} in the catalog", code=_UNKNOWN)


def get_national_item(national_item: str) -> CatalogItem:
    """The item whose national item (main + sub, 8 characters) is ``national_item``.

    For purposes already resolved and stored (a consent's ``purpose``); requests carry
    item codes and go through :func:`get_item`.
    """
    item = _BY_NATIONAL_ITEM.get(national_item)
    if item is None:
        raise NotFound(f"no national item {national_item!r} in the catalog", code=_UNKNOWN)
    return item


def to_json(item: CatalogItem) -> dict[str, Any]:
    """The public JSON form of an item (``GET /v1/items``)."""
    return {
        "national_item": item.national_item,
        "code": item.basic_code,
        "name": item.name,
        "name_en": item.name_en,
        "item_type": item.item_type,
        "item_type_name": item.item_type_name,
        "requirements": [
            {"certificate_type": r.certificate_type, "claims": list(r.claims)}
            for r in item.requirements
        ],
    }
