"""GB/T 36904 electronic-licence identifiers (电子证照标识).

Form: ``1.2.156.3005.2.<type code>.<issuer USCC>.<serial>.<version>.<check>`` where

* the type code is the 18-character USCC of the authority that defined the licence type
  followed by a 3-digit type number (e.g. ``11100000000013338W011``),
* the issuer is the 18-character USCC of the issuing agency,
* the serial is 1-20 digits, the version 3 digits (001-999),
* the check character is ISO/IEC 7064 MOD 37,36 over type + issuer + serial + version.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from exchange.errors import InvalidIdentifier
from exchange.identifiers.iso7064 import DIGITS, mod37_36_check_char
from exchange.identifiers.uscc import generate_uscc, validate_uscc

_CODE = "invalid-certificate-id"

# GB/T 36904: OID arc of the national electronic-licence identifiers.
CERTIFICATE_ID_ROOT = "1.2.156.3005.2"
_ROOT_ARCS = CERTIFICATE_ID_ROOT.count(".") + 1
TYPE_CODE_LENGTH = 21
MAX_SERIAL_LENGTH = 20


@dataclass(frozen=True, slots=True)
class CertificateId:
    """A certificate identifier whose structure, USCCs and check character were verified."""

    type_code: str
    issuer: str
    serial: str
    version: int
    check: str

    def __str__(self) -> str:
        return ".".join(
            (
                CERTIFICATE_ID_ROOT,
                self.type_code,
                self.issuer,
                self.serial,
                f"{self.version:03d}",
                self.check,
            )
        )


def _invalid(detail: str) -> InvalidIdentifier:
    return InvalidIdentifier(detail, code=_CODE)


def _check_type_code(type_code: str) -> None:
    if len(type_code) != TYPE_CODE_LENGTH:
        raise _invalid(
            f"certificate type code must be 21 characters (USCC + 3 digits), got {len(type_code)}"
        )
    try:
        validate_uscc(type_code[:18])
    except InvalidIdentifier as e:
        raise _invalid(f"certificate type code authority is not a valid USCC: {e.detail}") from e
    number = type_code[18:]
    if not number.isascii() or not number.isdigit():
        raise _invalid("certificate type code must end in 3 digits")


def _check_issuer(issuer: str) -> None:
    try:
        validate_uscc(issuer)
    except InvalidIdentifier as e:
        raise _invalid(f"certificate issuer is not a valid USCC: {e.detail}") from e


def _check_serial(serial: str) -> None:
    if not 1 <= len(serial) <= MAX_SERIAL_LENGTH:
        raise _invalid(f"certificate serial must be 1-20 digits, got {len(serial)} characters")
    if not serial.isascii() or not serial.isdigit():
        raise _invalid("certificate serial must contain digits only")


def _check_version(version: int) -> None:
    if not 1 <= version <= 999:
        raise _invalid(f"certificate version must be 1-999, got {version}")


def _check_char(type_code: str, issuer: str, serial: str, version: int) -> str:
    # GB/T 36904: ISO/IEC 7064 MOD 37,36 over the concatenation of the four fields.
    return mod37_36_check_char(f"{type_code}{issuer}{serial}{version:03d}")


def make_certificate_id(type_code: str, issuer_uscc: str, serial: str, version: int = 1) -> str:
    """Build a certificate identifier, computing its check character; raises if a part is bad."""
    _check_type_code(type_code)
    _check_issuer(issuer_uscc)
    _check_serial(serial)
    _check_version(version)
    check = _check_char(type_code, issuer_uscc, serial, version)
    return str(CertificateId(type_code, issuer_uscc, serial, version, check))


def parse_certificate_id(value: str) -> CertificateId:
    """Validate a certificate identifier string and return its parts, or raise InvalidIdentifier."""
    parts = value.split(".")
    # 1. Root arc and field count.
    if ".".join(parts[:_ROOT_ARCS]) != CERTIFICATE_ID_ROOT:
        raise _invalid(f"certificate identifier must start with {CERTIFICATE_ID_ROOT}.")
    fields = parts[_ROOT_ARCS:]
    if len(fields) != 5:
        raise _invalid(
            "certificate identifier must have 5 fields after the root "
            f"(type, issuer, serial, version, check), got {len(fields)}"
        )
    type_code, issuer, serial, version_text, check = fields
    # 2. Each field on its own.
    _check_type_code(type_code)
    _check_issuer(issuer)
    _check_serial(serial)
    if len(version_text) != 3 or not version_text.isascii() or not version_text.isdigit():
        raise _invalid(f"certificate version must be 3 digits, got {version_text!r}")
    version = int(version_text)
    _check_version(version)
    # 3. Check character.
    if len(check) != 1:
        raise _invalid(f"certificate check character must be 1 character, got {len(check)}")
    if check != _check_char(type_code, issuer, serial, version):
        raise _invalid("certificate identifier check character does not match (MOD 37,36)")
    return CertificateId(type_code, issuer, serial, version, check)


def generate_certificate_id(
    rng: random.Random,
    *,
    type_code: str | None = None,
    issuer_uscc: str | None = None,
    version: int = 1,
) -> str:
    """Generate a valid certificate identifier (test and demo data) from ``rng``."""
    if type_code is None:
        type_code = generate_uscc(rng) + f"{rng.randint(0, 999):03d}"
    if issuer_uscc is None:
        issuer_uscc = generate_uscc(rng)
    serial = "".join(rng.choice(DIGITS) for _ in range(rng.randint(1, MAX_SERIAL_LENGTH)))
    return make_certificate_id(type_code, issuer_uscc, serial, version)
