"""GB/T 2260 administrative region codes: the 31 provincial-level divisions of the mainland.

Only the province (first two digits) is checked against a table. The lower four digits
change every year (districts merge and split) and old codes stay valid inside identifiers
issued before the change, so a full GB/T 2260 table would reject real, older identifiers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from exchange.errors import InvalidIdentifier

_CODE = "invalid-region"

# GB/T 2260 provincial-level codes (tests/vectors/identifiers.json, provinces_gbt2260).
# Hong Kong (81), Macao (82) and Taiwan (71) are deliberately absent: the exchange serves the
# 31 mainland divisions only.
PROVINCES: Mapping[str, str] = MappingProxyType(
    {
        "11": "北京",
        "12": "天津",
        "13": "河北",
        "14": "山西",
        "15": "内蒙古",
        "21": "辽宁",
        "22": "吉林",
        "23": "黑龙江",
        "31": "上海",
        "32": "江苏",
        "33": "浙江",
        "34": "安徽",
        "35": "福建",
        "36": "江西",
        "37": "山东",
        "41": "河南",
        "42": "湖北",
        "43": "湖南",
        "44": "广东",
        "45": "广西",
        "46": "海南",
        "50": "重庆",
        "51": "四川",
        "52": "贵州",
        "53": "云南",
        "54": "西藏",
        "61": "陕西",
        "62": "甘肃",
        "63": "青海",
        "64": "宁夏",
        "65": "新疆",
    }
)

# The national (central) level. GB 32100 codes organisations registered by central
# authorities with this region, e.g. 11100000000013338W (vectors: uscc_gb32100.valid).
NATIONAL_REGION = "100000"


def validate_province_code(code: str) -> str:
    """Return ``code`` if it is one of the 31 two-digit GB/T 2260 province codes, else raise."""
    if len(code) != 2 or not code.isascii() or not code.isdigit():
        raise InvalidIdentifier(f"province code must be 2 digits, got {code!r}", code=_CODE)
    if code not in PROVINCES:
        raise InvalidIdentifier(
            f"{code!r} is not one of the 31 GB/T 2260 province codes", code=_CODE
        )
    return code


def validate_region(code: str, *, allow_national: bool = False) -> str:
    """Return ``code`` if it is a 6-digit GB/T 2260 region code in one of the 31 provinces.

    With ``allow_national`` the central-level code ``100000`` is accepted as well (GB 32100
    uses it for organisations registered by central authorities).
    """
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        raise InvalidIdentifier(f"region code must be 6 digits, got {code!r}", code=_CODE)
    if allow_national and code == NATIONAL_REGION:
        return code
    if code[:2] not in PROVINCES:
        raise InvalidIdentifier(
            f"region code {code!r} does not start with one of the 31 GB/T 2260 province codes",
            code=_CODE,
        )
    return code


def province_of(code: str) -> str:
    """Return the 2-digit province code of a valid 6-digit region code (raises if invalid)."""
    return validate_region(code)[:2]
