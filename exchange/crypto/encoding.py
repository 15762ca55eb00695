"""Strict base64 codecs for signed material.

Everything that is hashed or signed must have exactly one textual form, otherwise two
different strings could carry "the same" signature or digest. The decoders here therefore
accept only the canonical encoding: no padding where the format has none (RFC 7515 §2
base64url), no characters outside the alphabet, no whitespace, and no non-zero bits in the
unused tail of the last character (RFC 4648 §3.5).
"""

from __future__ import annotations

import base64
import binascii
import re

from exchange.errors import InvalidInput

__all__ = ["b64_decode", "b64_encode", "b64url_decode", "b64url_encode"]

_B64URL_CHARS = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    """Decode canonical, unpadded base64url; raise ``InvalidInput`` for anything else."""
    if not isinstance(s, str) or _B64URL_CHARS.fullmatch(s) is None:
        raise InvalidInput("not unpadded base64url", code="invalid-base64url")
    if len(s) % 4 == 1:
        raise InvalidInput("base64url has an impossible length", code="invalid-base64url")
    try:
        data = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except (binascii.Error, ValueError) as e:  # pragma: no cover - the checks above cover it
        raise InvalidInput("not unpadded base64url", code="invalid-base64url") from e
    # RFC 4648 §3.5: the spare bits of the last character must be zero.
    if b64url_encode(data) != s:
        raise InvalidInput("non-canonical base64url", code="invalid-base64url")
    return data


def b64_encode(data: bytes) -> str:
    """Encode ``data`` as standard base64 with padding (RFC 4648 §4)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64_decode(s: str) -> bytes:
    """Decode canonical, padded standard base64; raise ``InvalidInput`` for anything else."""
    if not isinstance(s, str):
        raise InvalidInput("not base64", code="invalid-base64")
    try:
        data = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput("not base64", code="invalid-base64") from e
    if b64_encode(data) != s:
        raise InvalidInput("non-canonical base64", code="invalid-base64")
    return data
