"""Token Status List codec and token: known answer, round trips, bombs, and attacks."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.crypto.encoding import b64url_decode, b64url_encode
from exchange.crypto.jws import SigningKey, resolve_by_kid, sign_jwt
from exchange.errors import InvalidInput, VerificationFailed
from exchange.status.codec import (
    INVALID,
    MAX_LIST_BYTES,
    SUSPENDED,
    VALID,
    StatusList,
    read_status,
    status_list_claims,
)

VECTOR = json.loads((Path(__file__).parent / "vectors" / "sdjwt_status.json").read_text("utf-8"))[
    "token_status_list"
]
NOW = 1_800_000_000
URI = "https://node.example/v1/status-lists/1"
KEY = SigningKey.generate()
RESOLVE = resolve_by_kid({KEY.kid: KEY.public_key()})


def _packed(statuses: list[int], bits: int) -> bytes:
    """Independent oracle: index i occupies bits [i*bits, (i+1)*bits) of a little-endian int."""
    number = sum(v << (i * bits) for i, v in enumerate(statuses))
    return number.to_bytes(-(-len(statuses) * bits // 8), "little")


# --- the list ---------------------------------------------------------------------------


def test_draft_vector_decodes_and_reencodes() -> None:
    lst = StatusList.decode(VECTOR["lst"], VECTOR["bits"])
    statuses = VECTOR["statuses_idx0_to_15"]
    assert lst.size == len(statuses)
    assert [lst.get(i) for i in range(lst.size)] == statuses
    assert lst.to_bytes().hex() == VECTOR["bytes_hex"]
    assert lst.encode() == VECTOR["lst"]
    rebuilt = StatusList(len(statuses), bits=1)
    for i, v in enumerate(statuses):
        rebuilt.set(i, v)
    assert rebuilt.encode() == VECTOR["lst"]
    assert rebuilt.to_json() == {"bits": 1, "lst": VECTOR["lst"]}
    assert rebuilt == lst


def test_status_values() -> None:
    assert (VALID, INVALID, SUSPENDED) == (0, 1, 2)


@settings(max_examples=80)
@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=300))
def test_two_bit_round_trip(statuses: list[int]) -> None:
    lst = StatusList(len(statuses))  # 2 bits by default
    assert lst.bits == 2
    for i, v in enumerate(statuses):
        lst.set(i, v)
    assert lst.to_bytes() == _packed(statuses, 2)
    assert zlib.decompress(b64url_decode(lst.encode())) == _packed(statuses, 2)
    decoded = StatusList.decode(lst.encode(), 2)
    assert [decoded.get(i) for i in range(len(statuses))] == statuses
    assert decoded.size == -(-len(statuses) // 4) * 4  # whole bytes of statuses


@given(st.sampled_from([1, 2, 4, 8]), st.data())
def test_every_width_round_trips(bits: int, data: st.DataObject) -> None:
    statuses = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=1, max_size=100))
    lst = StatusList(len(statuses), bits)
    for i, v in enumerate(statuses):
        lst.set(i, v)
    assert lst.to_bytes() == _packed(statuses, bits)
    decoded = StatusList.decode(lst.encode(), bits)
    assert [decoded.get(i) for i in range(len(statuses))] == statuses


def test_set_overwrites_only_its_own_bits() -> None:
    lst = StatusList(8, 2)
    for i in range(8):
        lst.set(i, 3)
    lst.set(5, INVALID)
    assert [lst.get(i) for i in range(8)] == [3, 3, 3, 3, 3, 1, 3, 3]


@pytest.mark.parametrize(("size", "bits"), [(8, 3), (0, 2), (-1, 1), (8, 0), (True, 1)])
def test_list_shape_is_validated(size: int, bits: int) -> None:
    with pytest.raises(InvalidInput):
        StatusList(size, bits)


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("set", (8, 1)),
        ("set", (-1, 1)),
        ("set", (0, 4)),
        ("set", (0, -1)),
        ("get", (8,)),
        ("get", (True,)),
    ],
)
def test_list_access_is_validated(method: str, args: tuple[int, ...]) -> None:
    call = getattr(StatusList(8, 2), method)
    with pytest.raises(InvalidInput):
        call(*args)


def test_zlib_bomb_is_rejected() -> None:
    bomb = b64url_encode(zlib.compress(bytes(MAX_LIST_BYTES + 1), 9))
    assert len(bomb) < 64 * 1024  # small on the wire, 16 MiB + 1 inflated
    with pytest.raises(InvalidInput):
        StatusList.decode(bomb, 2)
    at_limit = StatusList.decode(b64url_encode(zlib.compress(bytes(MAX_LIST_BYTES), 9)), 8)
    assert at_limit.size == MAX_LIST_BYTES


@pytest.mark.parametrize(
    "lst",
    [
        b64url_encode(zlib.compress(b"\x01\x02") + b"junk"),  # trailing data
        b64url_encode(zlib.compress(b"\x01\x02" * 50)[:-3]),  # truncated
        b64url_encode(zlib.compress(b"")),  # empty list
        b64url_encode(b"\x01\x02\x03"),  # not zlib
        b64url_encode(zlib.compress(b"\x01"))[:-1] + "=",  # not base64url
        "",
    ],
)
def test_malformed_lists_are_rejected(lst: str) -> None:
    with pytest.raises(InvalidInput):
        StatusList.decode(lst, 1)


def test_raw_deflate_without_zlib_header_is_rejected() -> None:
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = raw.compress(b"\x05" * 8) + raw.flush()
    with pytest.raises(InvalidInput):
        StatusList.decode(b64url_encode(data), 1)


# --- the token --------------------------------------------------------------------------


def _claims(lst: StatusList) -> dict[str, Any]:
    return status_list_claims(uri=URI, lst=lst, iat=NOW, exp=NOW + 3600, ttl=300)


def _token(
    lst: StatusList, *, key: SigningKey = KEY, typ: str = "statuslist+jwt", **kw: Any
) -> str:
    return sign_jwt({**_claims(lst), **kw}, key, typ=typ)


def _sample() -> StatusList:
    lst = StatusList(1024, 2)
    lst.set(3, INVALID)
    lst.set(700, SUSPENDED)
    return lst


def test_token_round_trip() -> None:
    token = _token(_sample())
    assert read_status(token, RESOLVE, idx=3, uri=URI, now=NOW) == INVALID
    assert read_status(token, RESOLVE, idx=700, uri=URI, now=NOW) == SUSPENDED
    assert read_status(token, RESOLVE, idx=4, uri=URI, now=NOW) == VALID
    # Independent reading: pyjwt for the signature, zlib for the list.
    options = {"verify_exp": False, "verify_iat": False}
    claims = pyjwt.decode(token, KEY.public_key(), algorithms=["EdDSA"], options=options)
    assert pyjwt.get_unverified_header(token)["typ"] == "statuslist+jwt"
    assert claims["sub"] == URI
    assert claims["ttl"] == 300
    raw = zlib.decompress(b64url_decode(claims["status_list"]["lst"]))
    assert (raw[700 // 4] >> (700 % 4 * 2)) & 3 == SUSPENDED


def _code(token: str, **kw: Any) -> str:
    kw = {"idx": 3, "uri": URI, "now": NOW, **kw}
    with pytest.raises(VerificationFailed) as info:
        read_status(token, RESOLVE, **kw)
    return info.value.code


def test_read_status_rejects_wrong_sub() -> None:
    assert _code(_token(_sample()), uri="https://node.example/v1/status-lists/2") == (
        "status-uri-mismatch"
    )
    assert _code(_token(_sample(), sub="https://evil.example/list")) == "status-uri-mismatch"


def test_read_status_rejects_wrong_typ() -> None:
    assert _code(_token(_sample(), typ="JWT")) == "typ-mismatch"
    assert _code(_token(_sample(), typ="dc+sd-jwt")) == "typ-mismatch"


def test_read_status_rejects_wrong_signature() -> None:
    impostor = SigningKey(kid=KEY.kid, private_key=SigningKey.generate().private_key)
    assert _code(_token(_sample(), key=impostor)) == "bad-signature"
    assert _code(_token(_sample(), key=SigningKey.generate())) == "unknown-key"
    head, _, sig = _token(_sample()).split(".")
    flipped = StatusList(1024, 2)  # the same list with index 3 made valid again
    flipped.set(700, SUSPENDED)
    forged = b64url_encode(json.dumps(_claims(flipped)).encode())
    assert _code(f"{head}.{forged}.{sig}") == "bad-signature"


def test_read_status_rejects_expired_and_incomplete_tokens() -> None:
    assert _code(_token(_sample()), now=NOW + 3600 + 31) == "expired"
    assert _code(_token(_sample(), exp=None)) == "missing-claim"
    assert _code(_token(_sample(), status_list=None)) == "missing-claim"
    assert _code(_token(_sample(), status_list={"bits": 3, "lst": "eNrbuRgAAhcBXQ"})) == "malformed"
    assert _code(_token(_sample(), status_list={"bits": 2})) == "malformed"


def test_read_status_rejects_indices_outside_the_list() -> None:
    assert _code(_token(_sample()), idx=1024) == "status-index-out-of-range"
    assert _code(_token(_sample()), idx=-1) == "status-index-out-of-range"


def test_status_list_claims_are_validated() -> None:
    lst = _sample()
    for kw in ({"uri": ""}, {"exp": NOW}, {"ttl": 0}, {"iat": float(NOW)}):
        args: dict[str, Any] = {"uri": URI, "lst": lst, "iat": NOW, "exp": NOW + 60, "ttl": 60}
        with pytest.raises(InvalidInput):
            status_list_claims(**{**args, **kw})
