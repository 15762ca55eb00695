"""GB 32100-2015 unified social credit codes (统一社会信用代码, USCC), and subject-ID typing.

``classify_subject_id`` lives here because a subject is either a person (resident ID) or an
organisation (USCC), and both are 18 characters long.

Layout (18 characters over ``0-9A-HJ-NP-RTUWXY``, i.e. without I, O, Z, S, V):

====== ===================================================================
1      registration authority (登记管理部门代码)
2      organisation category (机构类别代码)
3-8    GB/T 2260 region of the registering authority
9-17   GB 11714 organisation code (主体标识码), whose 9th character is its own
       MOD 11 check character
18     GB 32100 weighted mod-31 check character over characters 1-17
====== ===================================================================

The GB 11714 check is applied to every code. All four valid vectors (91350100M000100Y43,
11100000000013338W, 11430000006122244L, 11330105002500287C), the issuers in the certificate
identifier vectors (11220000013544541J) and the agencies in the item-code vectors
(11370800MB28559184, 12441500196720244T) pass it, so nothing in the vectors called for
restricting it to some registration authorities.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date
from typing import Literal

from exchange.errors import InvalidIdentifier
from exchange.identifiers.iso7064 import ALPHANUMERIC
from exchange.identifiers.region import PROVINCES, validate_region
from exchange.identifiers.resident_id import validate_resident_id

_CODE = "invalid-uscc"
USCC_LENGTH = 18

# GB 32100-2015 §4.1: the code character set, in value order (0 … 30).
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}
# GB 32100-2015 §5: W_i = 3**(i-1) mod 31 for i = 1 … 17.
USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))

# GB 32100-2015 Annex A (with later amendments): 1 机构编制, 2 外交, 3 司法行政, 4 文化,
# 5 民政, 6 旅游, 7 宗教, 8 工会, 9 工商, A 中央军委改革和编制办公室, N 农业, Y 其他.
REGISTRATION_AUTHORITIES = frozenset("123456789ANY")

# GB 11714-1997 §5: weights for the 8 body characters of the organisation code; characters
# are valued 0-9 then A = 10 … Z = 35.
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


@dataclass(frozen=True, slots=True)
class Uscc:
    """A unified social credit code that passed both check characters."""

    value: str
    registration_authority: str
    category: str
    region: str
    organisation_code: str


def uscc_check_char(body: str) -> str:
    """Return the GB 32100 check character (character 18) for the first 17 characters."""
    if len(body) != USCC_LENGTH - 1 or any(ch not in _VALUE for ch in body):
        raise ValueError("a USCC body is 17 characters over the GB 32100 alphabet")
    total = sum(_VALUE[ch] * w for ch, w in zip(body, USCC_WEIGHTS, strict=True))
    # GB 32100-2015 §5: C18 = 31 - MOD(sum, 31), with 31 written as '0'.
    return USCC_ALPHABET[(31 - total % 31) % 31]


def organisation_code_check_char(body: str) -> str:
    """Return the GB 11714 check character for the 8-character organisation-code body."""
    if len(body) != 8 or any(ch not in ALPHANUMERIC for ch in body):
        raise ValueError("an organisation-code body is 8 characters over 0-9A-Z")
    total = sum(ALPHANUMERIC.index(ch) * w for ch, w in zip(body, _ORG_WEIGHTS, strict=True))
    # GB 11714-1997 §5: C9 = 11 - MOD(sum, 11); 10 is written 'X' and 11 is written '0'.
    c9 = 11 - total % 11
    return {10: "X", 11: "0"}.get(c9, str(c9))


def _invalid(detail: str) -> InvalidIdentifier:
    return InvalidIdentifier(detail, code=_CODE)


def parse_uscc(value: str) -> Uscc:
    """Validate an 18-character USCC (both check characters) and return its parts.

    Raises InvalidIdentifier naming the first thing that is wrong.
    """
    # 1. Length and alphabet (GB 32100 §4.1).
    if len(value) != USCC_LENGTH:
        raise _invalid(f"USCC must be 18 characters, got {len(value)}")
    for pos, ch in enumerate(value, start=1):
        if ch in _VALUE:
            continue
        if ch.upper() in _VALUE:
            raise _invalid(f"USCC character {pos} is lower-case {ch!r}; letters must be upper-case")
        raise _invalid(
            f"USCC character {pos} ({ch!r}) is not in the GB 32100 alphabet "
            "0-9A-HJ-NP-RTUWXY (no I, O, Z, S, V)"
        )
    # 2. Registration authority and organisation category (GB 32100 §4.2, Annex A).
    authority, category = value[0], value[1]
    if authority not in REGISTRATION_AUTHORITIES:
        raise _invalid(f"USCC registration authority code {authority!r} is not 1-9, A, N or Y")
    if category not in "123456789":
        raise _invalid(f"USCC organisation category code {category!r} is not a digit 1-9")
    # 3. Registering region (GB 32100 §4.3: GB/T 2260; 100000 for central authorities).
    region = value[2:8]
    try:
        validate_region(region, allow_national=True)
    except InvalidIdentifier as e:
        raise _invalid(f"USCC region {region!r} (characters 3-8) is not valid: {e.detail}") from e
    # 4. Organisation code check character (GB 11714-1997 §5), characters 9-17.
    org = value[8:17]
    if org[8] != organisation_code_check_char(org[:8]):
        raise _invalid(
            "USCC organisation code (characters 9-17) check character does not match "
            "(GB 11714 MOD 11)"
        )
    # 5. Code check character (GB 32100-2015 §5), character 18.
    if value[17] != uscc_check_char(value[:17]):
        raise _invalid("USCC check character (character 18) does not match (GB 32100 mod 31)")
    return Uscc(
        value=value,
        registration_authority=authority,
        category=category,
        region=region,
        organisation_code=org,
    )


def validate_uscc(value: str) -> str:
    """Return ``value`` unchanged if it is a valid USCC, else raise InvalidIdentifier."""
    return parse_uscc(value).value


def generate_uscc(rng: random.Random, region: str | None = None) -> str:
    """Generate a USCC that passes both check characters (test and demo data).

    ``region`` is a 6-digit GB/T 2260 code (or ``100000``); a random one is drawn otherwise.
    """
    if region is None:
        province = rng.choice(sorted(PROVINCES))
        region = f"{province}{rng.randint(0, 99):02d}{rng.randint(0, 99):02d}"
    region = validate_region(region, allow_national=True)
    authority = rng.choice(sorted(REGISTRATION_AUTHORITIES))
    category = str(rng.randint(1, 9))
    org_body = "".join(rng.choice(USCC_ALPHABET) for _ in range(8))
    body = authority + category + region + org_body + organisation_code_check_char(org_body)
    return body + uscc_check_char(body)


SubjectKind = Literal["person", "enterprise"]


def classify_subject_id(value: str, *, today: date | None = None) -> SubjectKind:
    """Say whether ``value`` is a resident ID ("person") or a USCC ("enterprise").

    Both are 18 characters, and an all-digit string can pass both sets of checks (for
    example a resident ID from a region whose digits 3-4 happen to be a province code).
    Such a string is rejected rather than guessed: the caller must state the subject type,
    or one subject's records could be served for the other.
    """
    person_error: InvalidIdentifier | None = None
    enterprise_error: InvalidIdentifier | None = None
    try:
        validate_resident_id(value, today=today)
    except InvalidIdentifier as e:
        person_error = e
    try:
        validate_uscc(value)
    except InvalidIdentifier as e:
        enterprise_error = e
    if person_error is None and enterprise_error is None:
        raise InvalidIdentifier(
            "subject ID is valid both as a resident ID and as a USCC; "
            "the subject type must be given explicitly",
            code="ambiguous-subject-id",
        )
    if person_error is None:
        return "person"
    if enterprise_error is None:
        return "enterprise"
    raise InvalidIdentifier(
        "subject ID is neither a valid resident ID "
        f"({person_error.detail}) nor a valid USCC ({enterprise_error.detail})",
        code="invalid-subject-id",
    )
