"""Many base64 strings decoded in one call: the Python scanner's block decoder.

:mod:`.scan` hands a block's leaves to pydantic-core as one JSON array of strings instead
of calling ``a2b_base64`` once per line.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

_MANY: list[Callable[[bytes], list[bytes]] | None] = []  # decoder's, once it is made


def decoder() -> Callable[[bytes], list[bytes]] | None:
    """pydantic-core's base64 decoder (Rust, ~3x binascii's speed): a JSON array of
    strings to a list of bytes in one call. It takes standard and URL-safe base64 with or
    without padding, so the caller leaves it only strings of a length divisible by 4 with
    no ``-``, ``_`` or backslash (a JSON escape); it refuses non-zero unused bits, which
    strict ``a2b_base64`` allows, so what it refuses goes to a2b. None: not usable here."""
    if not _MANY:
        _MANY.append(None)
        with suppress(Exception):  # not installed, too old (no val_json_bytes), changed
            from pydantic_core import SchemaValidator, core_schema

            schema = core_schema.list_schema(core_schema.bytes_schema())
            many = SchemaValidator(schema, {"val_json_bytes": "base64"}).validate_json
            if many(b'["QUJD","QUI=","QQ==",""]') == [b"ABC", b"AB", b"A", b""] and all(
                _refuses(many, bad) for bad in (b"QQ=A", b"=QQQ", b"Q===", b"QQ==QUJD", b"Q*==")
            ):
                _MANY[0] = many
    return _MANY[0]


def _refuses(many: Callable[[bytes], list[bytes]], b64: bytes) -> bool:
    try:
        many(b'["' + b64 + b'"]')
    except ValueError:
        return True
    return False
