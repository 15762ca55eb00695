"""ISO/IEC 7064 check characters shared by the identifier modules.

Two systems are used by the Chinese identifiers this package validates:

* MOD 11-2 (pure system, one check character over ``0-9X``): GB 11643 resident IDs.
* MOD 37,36 (hybrid system, one check character over ``0-9A-Z``): GB/T 36904 certificate
  identifiers.

Both detect every single-character substitution, which the property tests rely on.
"""

from __future__ import annotations

DIGITS = "0123456789"
# ISO/IEC 7064 §5 alphanumeric character set, in value order (A = 10 … Z = 35).
ALPHANUMERIC = DIGITS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# ISO/IEC 7064 MOD 11-2: the check character for value 10 is 'X'.
_MOD11_2_CHECK_CHARS = DIGITS + "X"


def mod11_2_check_char(digits: str) -> str:
    """Return the ISO/IEC 7064 MOD 11-2 check character for a string of decimal digits.

    Computed as the pure system recursion P = 2 * (P + a) mod 11, which is the same as
    weighting position i (from the right, check at 1) by 2**(i-1) mod 11; GB 11643 prints
    those weights (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, …) for its 17 body digits.
    """
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError("MOD 11-2 input must be a non-empty string of ASCII digits")
    p = 0
    for ch in digits:
        p = ((p + int(ch)) * 2) % 11
    # ISO/IEC 7064 §6: choose c so that (P + c) mod 11 == 1.
    return _MOD11_2_CHECK_CHARS[(12 - p) % 11]


def mod37_36_check_char(chars: str) -> str:
    """Return the ISO/IEC 7064 MOD 37,36 (hybrid) check character over ``0-9A-Z``.

    Hybrid system with M = 36: P starts at M; for each character S = (P + a) mod M with
    0 read as M, then P = 2S mod (M + 1); the check c satisfies (P + c) mod M == 1.
    """
    if not chars or any(ch not in ALPHANUMERIC for ch in chars):
        raise ValueError("MOD 37,36 input must be a non-empty string over 0-9A-Z")
    m = 36
    p = m
    for ch in chars:
        s = (p + ALPHANUMERIC.index(ch)) % m or m
        p = (2 * s) % (m + 1)
    return ALPHANUMERIC[(m + 1 - p) % m]
