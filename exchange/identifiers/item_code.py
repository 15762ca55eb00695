"""GB/T 39554.1-2020 government-service item codes (政务服务事项编码).

Three forms, each containing the one before it:

* basic code (基本编码), 12 characters: 2-digit region (``00`` = national list, else a GB/T
  2260 province), 2-digit item type, 5-digit main item, 3-character sub item (``000`` no
  sub items, ``00Y`` has sub items, ``001``-``999`` a sub item);
* implementation code (实施编码), 31 characters: the implementing agency's 18-character USCC,
  a 1-digit exercise level (1-7), then the basic code;
* handling code (业务办理项编码), 33 characters: the implementation code and a 2-digit
  sequence.

The national item (一码通办) is main + sub: the same item whichever province lists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from exchange.errors import InvalidIdentifier
from exchange.identifiers.region import PROVINCES
from exchange.identifiers.uscc import validate_uscc

_CODE = "invalid-item-code"

BASIC_LENGTH = 12
IMPLEMENTATION_LENGTH = 31
HANDLING_LENGTH = 33
NATIONAL_LIST_REGION = "00"

# GB/T 39554.1 item types (vectors: item_codes_gbt39554.item_types).
ITEM_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "00": "行政权力事项",
        "01": "行政许可",
        "02": "行政处罚",
        "03": "行政强制",
        "04": "行政征收",
        "05": "行政给付",
        "06": "行政检查",
        "07": "行政确认",
        "08": "行政奖励",
        "09": "行政裁决",
        "10": "其他类别事项",
        "20": "公共服务事项",
    }
)
# Item types in use but missing from the table above. The vectors' own example
# implementation code 12441500196720244T3442199806003 has item type "21": it is a live
# Guangdong code (汕尾市供水总公司, 水费查缴办理, a public-utility service item) whose USCC passes
# both checks. Its Chinese name is not confirmed, so it is accepted without a name in
# ITEM_TYPES rather than guessed.
UNNAMED_ITEM_TYPES_IN_USE = frozenset({"21"})

# GB/T 39554.1 exercise levels (行使层级; vectors: item_codes_gbt39554.levels).
EXERCISE_LEVELS: Mapping[int, str] = MappingProxyType(
    {
        1: "国家级",
        2: "省级",
        3: "市级",
        4: "县级",
        5: "镇(乡、街道)级",
        6: "村(社区)级",
        7: "分级管理",
    }
)

ItemCodeForm = Literal["basic", "implementation", "handling"]


@dataclass(frozen=True, slots=True)
class ItemCode:
    """A parsed item code in any of its three forms; ``national_item`` is main + sub."""

    form: ItemCodeForm
    basic: str
    region: str
    item_type: str
    main: str
    sub: str
    agency_uscc: str | None
    level: int | None
    national_item: str
    handling_sequence: str | None = None


def _invalid(detail: str) -> InvalidIdentifier:
    return InvalidIdentifier(detail, code=_CODE)


def _is_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _parse_basic(basic: str) -> tuple[str, str, str, str]:
    region, item_type, main, sub = basic[:2], basic[2:4], basic[4:9], basic[9:12]
    # GB/T 39554.1: region is 00 (national basic list) or a GB/T 2260 province.
    if not _is_digits(region):
        raise _invalid(f"item code region {region!r} must be 2 digits")
    if region != NATIONAL_LIST_REGION and region not in PROVINCES:
        raise _invalid(
            f"item code region {region!r} is neither 00 (national) nor a GB/T 2260 province"
        )
    if item_type not in ITEM_TYPES and item_type not in UNNAMED_ITEM_TYPES_IN_USE:
        raise _invalid(f"item code item type {item_type!r} is not a GB/T 39554.1 item type")
    if not _is_digits(main):
        raise _invalid(f"item code main item {main!r} must be 5 digits")
    # Sub item: 000 (none), 00Y (has sub items) or 001-999.
    if sub == "00y":
        raise _invalid("item code sub item must use upper-case '00Y', not '00y'")
    if sub != "00Y" and not _is_digits(sub):
        raise _invalid(f"item code sub item {sub!r} must be 000, 00Y or 001-999")
    return region, item_type, main, sub


def parse_item_code(value: str) -> ItemCode:
    """Parse a basic (12), implementation (31) or handling (33) item code, or raise.

    Implementation and handling codes must carry a USCC that passes both check characters
    and an exercise level 1-7.
    """
    form: ItemCodeForm
    if len(value) == BASIC_LENGTH:
        form = "basic"
    elif len(value) == IMPLEMENTATION_LENGTH:
        form = "implementation"
    elif len(value) == HANDLING_LENGTH:
        form = "handling"
    else:
        raise _invalid(
            f"item code must be 12 (basic), 31 (implementation) or 33 (handling) characters, "
            f"got {len(value)}"
        )
    agency: str | None = None
    level: int | None = None
    sequence: str | None = None
    basic = value
    if form != "basic":
        agency, level_text, basic = value[:18], value[18], value[19:31]
        try:
            validate_uscc(agency)
        except InvalidIdentifier as e:
            raise _invalid(
                f"item code agency (characters 1-18) is not a valid USCC: {e.detail}"
            ) from e
        if not _is_digits(level_text) or int(level_text) not in EXERCISE_LEVELS:
            raise _invalid(f"item code exercise level {level_text!r} must be a digit 1-7")
        level = int(level_text)
    if form == "handling":
        sequence = value[31:]
        if not _is_digits(sequence):
            raise _invalid(f"item code handling sequence {sequence!r} must be 2 digits")
    region, item_type, main, sub = _parse_basic(basic)
    return ItemCode(
        form=form,
        basic=basic,
        region=region,
        item_type=item_type,
        main=main,
        sub=sub,
        agency_uscc=agency,
        level=level,
        national_item=main + sub,
        handling_sequence=sequence,
    )


def national_item_of(value: str) -> str:
    """Return the 8-character national item (main + sub) of any form of item code."""
    return parse_item_code(value).national_item
