"""The national item catalog: what each government-service item needs (DESIGN.md §3, §5).

Items are keyed by national item (main + sub of the GB/T 39554.1 basic code) and name the
certificate types, and the claims of each, that the item's process requires.
"""

from __future__ import annotations

from exchange.catalog.model import CatalogItem, Requirement, ResolvedItem
from exchange.catalog.service import (
    get_item,
    get_national_item,
    list_items,
    resolve_item,
    to_json,
)

__all__ = [
    "CatalogItem",
    "Requirement",
    "ResolvedItem",
    "get_item",
    "get_national_item",
    "list_items",
    "resolve_item",
    "to_json",
]
