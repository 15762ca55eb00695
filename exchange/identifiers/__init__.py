"""Chinese identifiers the exchange validates on every input (DESIGN.md §3).

Pure functions, no I/O. Every failure raises :class:`exchange.errors.InvalidIdentifier`
with an English ``detail`` and a ``code`` naming the identifier kind.
"""

from __future__ import annotations

from exchange.identifiers.certificate_id import (
    CERTIFICATE_ID_ROOT,
    CertificateId,
    generate_certificate_id,
    make_certificate_id,
    parse_certificate_id,
)
from exchange.identifiers.item_code import (
    EXERCISE_LEVELS,
    ITEM_TYPES,
    ItemCode,
    ItemCodeForm,
    national_item_of,
    parse_item_code,
)
from exchange.identifiers.region import (
    NATIONAL_REGION,
    PROVINCES,
    province_of,
    validate_province_code,
    validate_region,
)
from exchange.identifiers.resident_id import (
    EARLIEST_BIRTH_DATE,
    ResidentId,
    generate_resident_id,
    parse_resident_id,
    resident_id_check_char,
    validate_resident_id,
)
from exchange.identifiers.uscc import (
    USCC_ALPHABET,
    SubjectKind,
    Uscc,
    classify_subject_id,
    generate_uscc,
    organisation_code_check_char,
    parse_uscc,
    uscc_check_char,
    validate_uscc,
)

__all__ = [
    "CERTIFICATE_ID_ROOT",
    "EARLIEST_BIRTH_DATE",
    "EXERCISE_LEVELS",
    "ITEM_TYPES",
    "NATIONAL_REGION",
    "PROVINCES",
    "USCC_ALPHABET",
    "CertificateId",
    "ItemCode",
    "ItemCodeForm",
    "ResidentId",
    "SubjectKind",
    "Uscc",
    "classify_subject_id",
    "generate_certificate_id",
    "generate_resident_id",
    "generate_uscc",
    "make_certificate_id",
    "national_item_of",
    "organisation_code_check_char",
    "parse_certificate_id",
    "parse_item_code",
    "parse_resident_id",
    "parse_uscc",
    "province_of",
    "resident_id_check_char",
    "uscc_check_char",
    "validate_province_code",
    "validate_region",
    "validate_resident_id",
    "validate_uscc",
]
