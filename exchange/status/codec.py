"""IETF Token Status List (draft-ietf-oauth-status-list): the list and its JWT.

A Status List is a byte array holding ``bits`` bits per Referenced Token; index 0 is the
least significant bits of byte 0 (draft §4.1). On the wire it is ZLIB-compressed (RFC 1950,
level 9) and base64url-encoded without padding as ``lst``, next to ``bits``. The Status
List Token is a JWT with ``typ: statuslist+jwt`` whose ``sub`` is the list's URI (§5.1).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.crypto.encoding import b64url_decode, b64url_encode
from exchange.crypto.jws import decode_jwt
from exchange.errors import InvalidInput, VerificationFailed

__all__ = [
    "ALLOWED_BITS",
    "INVALID",
    "MAX_LIST_BYTES",
    "STATUS_LIST_TYP",
    "SUSPENDED",
    "VALID",
    "StatusList",
    "read_status",
    "status_list_claims",
]

VALID: Final = 0
"""Status 0x00: the token is valid (draft §7.1)."""
INVALID: Final = 1
"""Status 0x01: revoked, permanently (draft §7.1)."""
SUSPENDED: Final = 2
"""Status 0x02: temporarily invalid (draft §7.1)."""
ALLOWED_BITS: Final = (1, 2, 4, 8)
STATUS_LIST_TYP: Final = "statuslist+jwt"
MAX_LIST_BYTES: Final = 16 * 1024 * 1024
"""Cap on the decompressed list: a few bytes of DEFLATE can inflate to gigabytes."""


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{what} must be an integer", code="invalid-status-list")
    return value


class StatusList:
    """A mutable array of ``size`` statuses of ``bits`` bits each."""

    __slots__ = ("_bits", "_data", "_size")

    def __init__(self, size: int, bits: int = 2) -> None:
        """An all-VALID list of ``size`` entries."""
        if _check_int(bits, "bits") not in ALLOWED_BITS:
            raise InvalidInput("bits must be 1, 2, 4 or 8", code="invalid-status-list")
        if not 0 < _check_int(size, "size") <= MAX_LIST_BYTES * 8 // bits:
            raise InvalidInput("status list size out of range", code="invalid-status-list")
        self._bits = bits
        self._size = size
        self._data = bytearray(-(-size * bits // 8))

    @property
    def bits(self) -> int:
        """Bits per status."""
        return self._bits

    @property
    def size(self) -> int:
        """Number of statuses."""
        return self._size

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= _check_int(i, "index") < self._size:
            raise InvalidInput("status index out of range", code="status-index-out-of-range")
        bit = i * self._bits
        return bit // 8, bit % 8

    def get(self, i: int) -> int:
        """The status at index ``i``."""
        byte, shift = self._locate(i)
        return (self._data[byte] >> shift) & ((1 << self._bits) - 1)

    def set(self, i: int, v: int) -> None:
        """Set the status at index ``i`` to ``v`` (``0 <= v < 2**bits``)."""
        byte, shift = self._locate(i)
        mask = (1 << self._bits) - 1
        if not 0 <= _check_int(v, "status") <= mask:
            raise InvalidInput(f"status {v} does not fit in {self._bits} bits")
        self._data[byte] = (self._data[byte] & ~(mask << shift) & 0xFF) | (v << shift)

    def to_bytes(self) -> bytes:
        """The uncompressed byte array."""
        return bytes(self._data)

    def encode(self) -> str:
        """``lst``: ZLIB (level 9) of the byte array, base64url without padding (draft §4.1)."""
        return b64url_encode(zlib.compress(bytes(self._data), level=9))

    @classmethod
    def decode(cls, lst: str, bits: int) -> StatusList:
        """Parse ``lst``; every status the decompressed bytes can hold becomes an entry."""
        if _check_int(bits, "bits") not in ALLOWED_BITS:
            raise InvalidInput("bits must be 1, 2, 4 or 8", code="invalid-status-list")
        try:
            compressed = b64url_decode(lst)
        except InvalidInput as e:
            raise InvalidInput("lst is not base64url", code="invalid-status-list") from e
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(compressed, MAX_LIST_BYTES)
        except zlib.error as e:
            raise InvalidInput("lst is not ZLIB data", code="invalid-status-list") from e
        if inflater.unconsumed_tail:
            raise InvalidInput("status list exceeds the size limit", code="invalid-status-list")
        if not inflater.eof or inflater.unused_data or not data:
            raise InvalidInput("lst is truncated, padded or empty", code="invalid-status-list")
        result = cls(len(data) * 8 // bits, bits)
        result._data[:] = data
        return result

    def to_json(self) -> dict[str, Any]:
        """The ``status_list`` claim value: ``{"bits", "lst"}``."""
        return {"bits": self._bits, "lst": self.encode()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StatusList):
            return NotImplemented
        return (self._bits, self._size, self._data) == (other._bits, other._size, other._data)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"StatusList(size={self._size}, bits={self._bits})"


def status_list_claims(
    *, uri: str, lst: StatusList, iat: int, exp: int, ttl: int
) -> dict[str, Any]:
    """The claims of a Status List Token (draft §5.1), to sign with ``typ=statuslist+jwt``."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInput("the status list URI must be a non-empty string")
    if _check_int(exp, "exp") <= _check_int(iat, "iat"):
        raise InvalidInput("exp must be after iat")
    if _check_int(ttl, "ttl") <= 0:
        raise InvalidInput("ttl must be positive")
    return {"sub": uri, "iat": iat, "exp": exp, "ttl": ttl, "status_list": lst.to_json()}


def read_status(
    token: str,
    resolve_key: Callable[[Mapping[str, Any]], Ed25519PublicKey],
    *,
    idx: int,
    uri: str,
    now: float,
) -> int:
    """Verify a Status List Token fetched from ``uri`` and return the status at ``idx``.

    Checks (draft §8.3): signature and ``typ: statuslist+jwt``; ``iat``, ``exp`` and
    ``sub`` present (``exp`` is optional in the draft, but a list without one could be
    replayed forever, so we require it) and the token unexpired; ``sub`` equals ``uri``;
    ``idx`` inside the list.
    """
    verified = decode_jwt(
        token,
        resolve_key,
        typ=(STATUS_LIST_TYP,),
        now=now,
        require=("sub", "iat", "exp", "status_list"),
    )
    if verified.claims["sub"] != uri:
        raise VerificationFailed("status list token is for another URI", code="status-uri-mismatch")
    status_list = verified.claims["status_list"]
    encoded = status_list.get("lst") if isinstance(status_list, dict) else None
    bits = status_list.get("bits") if isinstance(status_list, dict) else None
    if not isinstance(encoded, str) or not isinstance(bits, int):
        raise VerificationFailed("status_list claim is malformed", code="malformed")
    try:
        lst = StatusList.decode(encoded, bits)
    except InvalidInput as e:
        raise VerificationFailed(f"status list is malformed: {e.detail}", code="malformed") from e
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < lst.size:
        raise VerificationFailed("status index outside the list", code="status-index-out-of-range")
    return lst.get(idx)
