"""GB 11643-1999 citizen identification numbers (公民身份号码), the 18-character form.

Layout: 6-digit GB/T 2260 region of first registration, 8-digit birth date YYYYMMDD,
3-digit sequence (odd for men, even for women), 1 ISO/IEC 7064 MOD 11-2 check character.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from exchange.errors import InvalidIdentifier
from exchange.identifiers.iso7064 import mod11_2_check_char
from exchange.identifiers.region import PROVINCES, validate_region

_CODE = "invalid-resident-id"
RESIDENT_ID_LENGTH = 18

# The earliest birth date accepted. GB 11643-1999's own worked example 440524188001010014
# (vectors: resident_id_gb11643.valid) was born 1880-01-01, so a 1900 floor would reject the
# standard's example; 1800-01-01 still catches garbage such as year 0000 or 1019.
EARLIEST_BIRTH_DATE = date(1800, 1, 1)

# Default span for generated birth dates (demo data and tests).
_GENERATED_BIRTH_FROM = date(1930, 1, 1)
_GENERATED_BIRTH_TO = date(2015, 12, 31)


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A resident ID that passed every GB 11643 check."""

    value: str
    region: str
    birth_date: date
    sequence: str


def resident_id_check_char(body: str) -> str:
    """Return the GB 11643 check character for the first 17 digits (ISO 7064 MOD 11-2)."""
    if len(body) != RESIDENT_ID_LENGTH - 1:
        raise ValueError("a resident ID body is 17 digits")
    return mod11_2_check_char(body)


def _invalid(detail: str) -> InvalidIdentifier:
    return InvalidIdentifier(detail, code=_CODE)


def parse_resident_id(value: str, *, today: date | None = None) -> ResidentId:
    """Validate an 18-character resident ID and return its parts, or raise InvalidIdentifier.

    ``today`` bounds the birth date from above; when it is None no future-date check is made
    (this module never reads the wall clock: pass the clock's date in).
    """
    # 1. Length and alphabet (GB 11643 §4: 17 digits then a digit or upper-case X).
    if len(value) != RESIDENT_ID_LENGTH:
        raise _invalid(f"resident ID must be 18 characters, got {len(value)}")
    body, check = value[:17], value[17]
    if not body.isascii() or not body.isdigit():
        raise _invalid("resident ID characters 1-17 must be digits 0-9")
    if check == "x":
        raise _invalid("resident ID check character must be upper-case 'X', not 'x'")
    if not (check.isascii() and check.isdigit()) and check != "X":
        raise _invalid("resident ID character 18 must be a digit or 'X'")

    # 2. Region of first registration (GB/T 2260; only the province is checked).
    region = body[:6]
    try:
        validate_region(region)
    except InvalidIdentifier as e:
        raise _invalid(f"resident ID region {region!r} is not valid: {e.detail}") from e

    # 3. Birth date: a real calendar date, not before EARLIEST_BIRTH_DATE, not after today.
    raw = body[6:14]
    try:
        birth = date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))
    except ValueError as e:
        raise _invalid(f"resident ID birth date {raw!r} is not a calendar date") from e
    if birth < EARLIEST_BIRTH_DATE:
        raise _invalid(
            f"resident ID birth date {birth.isoformat()} is before "
            f"{EARLIEST_BIRTH_DATE.isoformat()}"
        )
    if today is not None and birth > today:
        raise _invalid(f"resident ID birth date {birth.isoformat()} is in the future")

    # 4. Check character (GB 11643 §5.2, ISO/IEC 7064 MOD 11-2).
    expected = resident_id_check_char(body)
    if check != expected:
        raise _invalid("resident ID check character does not match (ISO 7064 MOD 11-2)")
    return ResidentId(value=value, region=region, birth_date=birth, sequence=body[14:17])


def validate_resident_id(value: str, *, today: date | None = None) -> str:
    """Return ``value`` unchanged if it is a valid resident ID, else raise InvalidIdentifier."""
    return parse_resident_id(value, today=today).value


def generate_resident_id(
    rng: random.Random, birth: date | None = None, region: str | None = None
) -> str:
    """Generate a valid resident ID (test and demo data) from ``rng``.

    ``region`` must be a valid 6-digit region code; a random one is drawn otherwise.
    ``birth`` defaults to a random date between 1930 and 2015.
    """
    if region is None:
        province = rng.choice(sorted(PROVINCES))
        region = f"{province}{rng.randint(1, 99):02d}{rng.randint(1, 99):02d}"
    validate_region(region)
    if birth is None:
        span = (_GENERATED_BIRTH_TO - _GENERATED_BIRTH_FROM).days
        birth = _GENERATED_BIRTH_FROM + timedelta(days=rng.randint(0, span))
    if birth < EARLIEST_BIRTH_DATE:
        raise ValueError(f"cannot encode birth date {birth.isoformat()} in a resident ID")
    body = f"{region}{birth:%Y%m%d}{rng.randint(0, 999):03d}"
    return body + resident_id_check_char(body)
