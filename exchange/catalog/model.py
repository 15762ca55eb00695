"""The national item catalog's domain objects, validated at construction.

A catalog item is one national item (一码通办: main + sub of the GB/T 39554.1 basic code) and
the certificates its process needs. Each requirement names a registered certificate type and
only the claims the process really uses (minimal disclosure, DESIGN.md §2.4); the subject
identifier ``sub`` is always bound to a certificate and is never listed.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.certificates.types import REGISTRY, SubjectKind
from exchange.errors import InvalidInput
from exchange.identifiers.item_code import (
    ITEM_TYPES,
    NATIONAL_LIST_REGION,
    ItemCode,
    parse_item_code,
)

_CODE = "invalid-catalog-item"


def _invalid(detail: str) -> InvalidInput:
    return InvalidInput(detail, code=_CODE)


@dataclass(frozen=True, slots=True)
class Requirement:
    """A certificate type an item requires, and the claims of it the item needs."""

    certificate_type: str
    claims: tuple[str, ...]

    def __post_init__(self) -> None:
        ctype = REGISTRY.get(self.certificate_type)
        if ctype is None:
            raise _invalid(f"unknown certificate type {self.certificate_type!r}")
        if not self.claims:
            raise _invalid(f"a requirement of {self.certificate_type} must name its claims")
        if len(set(self.claims)) != len(self.claims):
            raise _invalid(f"claims of {self.certificate_type} are listed twice")
        if "sub" in self.claims:
            raise _invalid("'sub' is bound to every certificate and is not listed as a claim")
        unknown = [c for c in self.claims if ctype.claim(c) is None]
        if unknown:
            raise _invalid(f"claims not defined for {self.certificate_type}: {', '.join(unknown)}")


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One national item (事项) and the certificates it requires."""

    national_item: str
    basic_code: str
    name: str
    name_en: str
    item_type: str
    requirements: tuple[Requirement, ...]

    def __post_init__(self) -> None:
        code = parse_item_code(self.basic_code)  # raises InvalidIdentifier
        if code.form != "basic" or code.region != NATIONAL_LIST_REGION:
            raise _invalid(
                f"{self.basic_code!r} is not a national basic code (12 characters, region 00)"
            )
        if code.national_item != self.national_item:
            raise _invalid(
                f"basic code {self.basic_code} is national item {code.national_item}, "
                f"not {self.national_item}"
            )
        if code.sub == "00Y":
            raise _invalid(f"{self.basic_code}: an item with sub items (00Y) is not itself one")
        if self.item_type not in ITEM_TYPES:
            raise _invalid(f"item type {self.item_type!r} is not a named GB/T 39554.1 item type")
        if code.item_type != self.item_type:
            raise _invalid(
                f"basic code {self.basic_code} has item type {code.item_type}, not {self.item_type}"
            )
        if not self.name.strip() or not self.name_en.strip():
            raise _invalid(f"item {self.national_item} needs a Chinese and an English name")
        if not self.requirements:
            raise _invalid(f"item {self.national_item} requires no certificate")
        types = [r.certificate_type for r in self.requirements]
        if len(set(types)) != len(types):
            raise _invalid(f"item {self.national_item} lists a certificate type twice")
        # A pull is for one subject: some kind of subject must be able to hold every type.
        if not self.subject_kinds:
            raise _invalid(
                f"item {self.national_item} requires certificates no one subject can hold: "
                f"{', '.join(types)}"
            )

    @property
    def item_type_name(self) -> str:
        return ITEM_TYPES[self.item_type]

    @property
    def subject_kinds(self) -> tuple[SubjectKind, ...]:
        """The kinds of subject (person, enterprise) that can hold every required type."""
        kinds = [REGISTRY[r.certificate_type].subject_kinds for r in self.requirements]
        return tuple(k for k in ("person", "enterprise") if all(k in ks for ks in kinds))

    @property
    def certificate_types(self) -> tuple[str, ...]:
        return tuple(r.certificate_type for r in self.requirements)

    def requirement(self, certificate_type: str) -> Requirement | None:
        """The requirement for ``certificate_type``, or None if the item does not need it."""
        return next((r for r in self.requirements if r.certificate_type == certificate_type), None)


@dataclass(frozen=True, slots=True)
class ResolvedItem:
    """An item code as parsed, and the national item it resolves to."""

    code: ItemCode
    item: CatalogItem
