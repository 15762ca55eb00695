"""The project's one JSON canonicaliser for bytes that are signed or hashed.

``canonical_json`` is what every JWS header and payload, every SD-JWT disclosure and every
ledger leaf is serialised with. Its form:

* orjson output: UTF-8, no insignificant whitespace, non-ASCII characters (Chinese text)
  written as themselves rather than ``\\uXXXX`` escapes;
* object members sorted by key (``OPT_SORT_KEYS``: code-point order of the UTF-8 key);
* only JSON values: ``dict`` with ``str`` keys, ``list``/``tuple``, ``str``, ``int`` within
  the signed/unsigned 64-bit range, finite ``float``, ``bool``, ``None``. NaN and infinities
  (which orjson would silently turn into ``null``), non-string keys and any other Python
  type (``datetime``, ``UUID``, dataclasses, which orjson would happily serialise) are
  refused, so no value can be signed in a form a reader cannot parse back to itself.

This is deliberately *not* RFC 8785 (JCS): float formatting and key order differ for edge
cases (JCS sorts by UTF-16 code units). It is stable because orjson's output for these
types is, and the round-trip property tests pin it.

``parse_json`` is the matching strict reader for bytes received from outside: it rejects
duplicate object members (RFC 7519 §4 / RFC 8259 §4 leave that to us), the non-standard
``NaN``/``Infinity`` literals, invalid UTF-8 and absurd nesting.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from exchange.errors import InvalidInput

__all__ = ["MAX_DEPTH", "canonical_json", "parse_json"]

MAX_DEPTH = 128
"""Deepest nesting accepted in either direction (orjson itself stops at 255)."""


def _check(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidInput("JSON value nested too deeply", code="invalid-json")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput("NaN and infinities are not JSON", code="invalid-json")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput("JSON object keys must be strings", code="invalid-json")
            _check(item, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check(item, depth + 1)
        return
    raise InvalidInput(f"{type(value).__name__} is not a JSON value", code="invalid-json")


def canonical_json(obj: object) -> bytes:
    """Serialise ``obj`` to the project's canonical JSON bytes (see the module docstring)."""
    _check(obj, 0)
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as e:  # out-of-range ints, lone surrogates
        raise InvalidInput(f"not serialisable as JSON: {e}", code="invalid-json") from e


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidInput(f"duplicate JSON member {key!r}", code="invalid-json")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidInput(f"{name} is not JSON", code="invalid-json")


def parse_json(data: bytes | str) -> Any:
    """Parse untrusted JSON strictly; raise ``InvalidInput`` on anything questionable."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except InvalidInput:
        raise
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError too
        raise InvalidInput(f"not JSON: {e}", code="invalid-json") from e
    _check(value, 0)
    return value
