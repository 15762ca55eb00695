"""SD-JWT issuance, presentation and verification (RFC 9901), and the attacks on it."""

from __future__ import annotations

import hashlib
import json
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.crypto.encoding import b64url_decode, b64url_encode
from exchange.crypto.jws import SigningKey, sign_jwt
from exchange.crypto.sdjwt import (
    decode_disclosure,
    disclosure_digest,
    issue_sd_jwt,
    present,
    split_sd_jwt,
    verify_sd_jwt,
)
from exchange.errors import InvalidInput, VerificationFailed

VECTORS = json.loads((Path(__file__).parent / "vectors" / "sdjwt_status.json").read_text("utf-8"))
NOW = 1_800_000_000
KEY = SigningKey.generate()
OTHER = SigningKey.generate()
PLAIN = {
    "iss": "https://node.example/issuers/91310000MA1FL8KQ3B",
    "iat": NOW,
    "nbf": NOW,
    "exp": NOW + 86_400,
    "vct": "urn:certex:business-licence",
    "status": {"status_list": {"idx": 7, "uri": "https://node.example/v1/status-lists/1"}},
}
SUBJECT = {"sub": "91310000MA1FL8KQ3B", "name": "上海某某科技有限公司", "capital": 1_000_000}


def resolve(header: Any, payload: Any) -> Any:
    if header.get("kid") == KEY.kid and payload.get("iss") == PLAIN["iss"]:
        return KEY.public_key()
    raise VerificationFailed("unknown issuer key", code="unknown-key")


def _verify(sd_jwt: str, **kwargs: Any) -> Any:
    kwargs.setdefault("now", NOW)
    return verify_sd_jwt(sd_jwt, resolve, **kwargs)


def _code(sd_jwt: str, **kwargs: Any) -> str:
    with pytest.raises(VerificationFailed) as info:
        _verify(sd_jwt, **kwargs)
    return info.value.code


def _disclosure(salt: str, name: str, value: Any) -> str:
    # Encoded independently of the module under test (stdlib json, ASCII escapes).
    return b64url_encode(json.dumps([salt, name, value]).encode())


def _craft(payload: dict[str, Any], disclosures: list[str], key: SigningKey = KEY) -> str:
    return "~".join([sign_jwt(payload, key, typ="dc+sd-jwt"), *disclosures, ""])


def _payload(sd_jwt: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(b64url_decode(sd_jwt.split(".")[1]))
    return result


# --- known answers ----------------------------------------------------------------------


def test_rfc9901_disclosure_digest_vector() -> None:
    vector = VECTORS["sd_jwt_disclosure_digest"]
    disclosure = decode_disclosure(vector["disclosure"])
    assert [disclosure.salt, disclosure.name, disclosure.value] == vector["decoded"]
    assert disclosure.digest == vector["sha256_b64url"]
    assert disclosure_digest(vector["disclosure"]) == vector["sha256_b64url"]


def test_issued_form() -> None:
    salts = count()
    sd_jwt = issue_sd_jwt(
        key=KEY,
        plain_claims=PLAIN,
        disclosable=SUBJECT,
        salt=lambda: next(salts).to_bytes(16, "big"),
        decoys=3,
    )
    issuer_jwt, disclosures, kb = split_sd_jwt(sd_jwt)
    assert kb is None
    assert sd_jwt.endswith("~")
    header = json.loads(b64url_decode(issuer_jwt.split(".")[0]))
    assert header == {"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": KEY.kid}
    payload = _payload(sd_jwt)
    assert payload["_sd_alg"] == "sha-256"
    assert payload["_sd"] == sorted(payload["_sd"])
    assert len(payload["_sd"]) == 3 + 3
    assert {k: v for k, v in payload.items() if not k.startswith("_sd")} == PLAIN
    for d in disclosures:
        salt, name, value = json.loads(b64url_decode(d))
        assert len(b64url_decode(salt)) == 16  # 128-bit salts
        assert SUBJECT[name] == value
        expected = b64url_encode(hashlib.sha256(d.encode("ascii")).digest())
        assert expected in payload["_sd"]
    assert "上海" in b64url_decode(disclosures[1]).decode("utf-8")  # UTF-8, not \u escapes


def test_salts_are_fresh_by_default() -> None:
    first = split_sd_jwt(issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT))[1]
    second = split_sd_jwt(issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT))[1]
    assert not set(first) & set(second)


# --- round trips ------------------------------------------------------------------------

_NAMES = st.text(min_size=1, max_size=8).filter(
    lambda n: n not in PLAIN and n not in {"_sd", "...", "_sd_alg", "cnf", "vct#integrity"}
) | st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1)
_KEYS = st.text(max_size=6).filter(lambda k: k not in {"_sd", "..."})
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF))
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_NAMES, _VALUES, max_size=6), st.data())
def test_issue_present_verify_round_trip(claims: dict[str, Any], data: st.DataObject) -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=claims, decoys=2)
    full = _verify(sd_jwt)
    assert full.disclosed == claims
    assert dict(full.claims) == PLAIN
    assert full.header["typ"] == "dc+sd-jwt"
    assert {d.name for d in full.disclosures} == set(claims)
    keep = data.draw(st.sets(st.sampled_from(sorted(claims))) if claims else st.just(set()))
    shown = _verify(present(sd_jwt, keep))
    assert shown.disclosed == {k: v for k, v in claims.items() if k in keep}
    assert dict(shown.claims) == PLAIN


def test_present_keeps_only_named_claims() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    presentation = present(sd_jwt, {"name", "not-a-claim"})
    assert presentation.count("~") == 2
    assert presentation.endswith("~")
    assert _verify(presentation).disclosed == {"name": SUBJECT["name"]}
    assert _verify(present(sd_jwt, set())).disclosed == {}
    with pytest.raises(InvalidInput):
        present(sd_jwt, "name")


def test_legacy_typ_is_accepted() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT, typ="vc+sd-jwt")
    assert _verify(sd_jwt).disclosed == SUBJECT


# --- issuer refuses what the verifier would refuse --------------------------------------


@pytest.mark.parametrize(
    ("plain", "disclosable"),
    [
        (PLAIN, {"iss": "x"}),
        (PLAIN, {"exp": 1}),
        (PLAIN, {"status": {}}),
        (PLAIN, {"_sd": []}),
        ({**PLAIN, "_sd_alg": "sha-256"}, SUBJECT),
        (PLAIN, {"nested": {"_sd": ["x"]}}),
        (PLAIN, {"list": [{"...": "x"}]}),
    ],
)
def test_issuer_input_is_validated(plain: dict[str, Any], disclosable: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        issue_sd_jwt(key=KEY, plain_claims=plain, disclosable=disclosable)


def test_issuer_refuses_short_salts_and_negative_decoys() -> None:
    with pytest.raises(InvalidInput):
        issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT, salt=lambda: b"short")
    with pytest.raises(InvalidInput):
        issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT, decoys=-1)


# --- attacks ----------------------------------------------------------------------------


def test_tampered_disclosure() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    issuer_jwt, disclosures, _ = split_sd_jwt(sd_jwt)
    salt, name, _value = json.loads(b64url_decode(disclosures[2]))
    forged = _disclosure(salt, name, 999_999_999)
    assert _code("~".join([issuer_jwt, forged, ""])) == "disclosure-unreferenced"
    garbled = disclosures[2][:-3] + "AAA"
    assert _code("~".join([issuer_jwt, garbled, ""])) in {
        "disclosure-invalid",
        "disclosure-unreferenced",
    }
    not_json = b64url_encode(b"[not json")
    assert _code("~".join([issuer_jwt, not_json, ""])) == "disclosure-invalid"


def test_disclosure_from_another_credential() -> None:
    mine = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    theirs = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable={**SUBJECT, "name": "别人"})
    stolen = split_sd_jwt(theirs)[1][1]
    assert _code(present(mine, {"sub"}) + stolen + "~") == "disclosure-unreferenced"


def test_duplicated_disclosure() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    issuer_jwt, disclosures, _ = split_sd_jwt(sd_jwt)
    twice = "~".join([issuer_jwt, *disclosures, disclosures[0], ""])
    assert _code(twice) == "disclosure-duplicate"


def test_duplicated_digest_in_sd() -> None:
    d = _disclosure("c2FsdHNhbHRzYWx0c2FsdA", "name", "x")
    payload = {**PLAIN, "_sd": [disclosure_digest(d)] * 2, "_sd_alg": "sha-256"}
    assert _code(_craft(payload, [d])) == "disclosure-invalid"


def test_two_disclosures_for_one_name_or_a_plain_claim() -> None:
    d1 = _disclosure("c2FsdDE", "name", "a")
    d2 = _disclosure("c2FsdDI", "name", "b")
    payload = {**PLAIN, "_sd": sorted([disclosure_digest(d1), disclosure_digest(d2)])}
    assert _code(_craft(payload, [d1, d2])) == "disclosure-invalid"
    d3 = _disclosure("c2FsdDM", "vct", "urn:forged")
    assert _code(_craft({**PLAIN, "_sd": [disclosure_digest(d3)]}, [d3])) == "disclosure-invalid"
    d4 = _disclosure("c2FsdDQ", "capital", 1)
    payload = {**PLAIN, "capital": 2, "_sd": [disclosure_digest(d4)]}
    assert _code(_craft(payload, [d4])) == "disclosure-invalid"


@pytest.mark.parametrize(
    "content",
    [["c2FsdA", "_sd", 1], ["c2FsdA", "...", 1], ["c2FsdA", "FR"], [1, "name", "x"], {"a": 1}],
)
def test_reserved_names_and_array_disclosures(content: Any) -> None:
    d = b64url_encode(json.dumps(content).encode())
    assert _code(_craft({**PLAIN, "_sd": [disclosure_digest(d)]}, [d])) == "disclosure-invalid"


def test_nested_and_recursive_disclosures_are_refused() -> None:
    inner = _disclosure("c2FsdDE", "street", "人民大道200号")
    nested = {**PLAIN, "address": {"_sd": [disclosure_digest(inner)]}}
    assert _code(_craft(nested, [inner])) == "disclosure-invalid"
    outer = _disclosure("c2FsdDI", "address", {"_sd": [disclosure_digest(inner)]})
    payload = {**PLAIN, "_sd": sorted([disclosure_digest(outer)])}
    assert _code(_craft(payload, [outer])) == "disclosure-invalid"
    array = {**PLAIN, "nationalities": [{"...": disclosure_digest(inner)}]}
    assert _code(_craft(array, [])) == "disclosure-invalid"


def test_wrong_typ() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT, typ="JWT")
    assert _code(sd_jwt) == "typ-mismatch"
    assert _code(issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable={}), typ=("x+jwt",)) == (
        "typ-mismatch"
    )


def test_alg_none() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    issuer_jwt, disclosures, _ = split_sd_jwt(sd_jwt)
    header = b64url_encode(json.dumps({"alg": "none", "typ": "dc+sd-jwt"}).encode())
    unsigned = f"{header}.{issuer_jwt.split('.')[1]}."
    assert _code("~".join([unsigned, *disclosures, ""])) == "alg-not-allowed"


def test_signature_by_another_key() -> None:
    impostor = SigningKey(kid=KEY.kid, private_key=OTHER.private_key)
    sd_jwt = issue_sd_jwt(key=impostor, plain_claims=PLAIN, disclosable=SUBJECT)
    assert _code(sd_jwt) == "bad-signature"
    assert _code(issue_sd_jwt(key=OTHER, plain_claims=PLAIN, disclosable=SUBJECT)) == "unknown-key"


def test_validity_window() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    assert _code(sd_jwt, now=PLAIN["exp"] + 31) == "expired"
    assert _code(sd_jwt, now=NOW - 31) == "not-yet-valid"
    assert _verify(sd_jwt, now=PLAIN["exp"] + 29).disclosed == SUBJECT
    assert _code(sd_jwt, now=PLAIN["exp"] + 1, leeway=0) == "expired"
    future_iat = issue_sd_jwt(
        key=KEY, plain_claims={**PLAIN, "nbf": NOW - 10, "iat": NOW + 600}, disclosable=SUBJECT
    )
    assert _code(future_iat) == "not-yet-valid"


@pytest.mark.parametrize("sd_alg", ["sha-512", "SHA-256", "md5", None, 1])
def test_other_sd_alg(sd_alg: Any) -> None:
    d = _disclosure("c2FsdA", "name", "x")
    payload = {**PLAIN, "_sd": [disclosure_digest(d)], "_sd_alg": sd_alg}
    assert _code(_craft(payload, [d])) == "alg-not-allowed"


def test_absent_sd_alg_means_sha256() -> None:
    d = _disclosure("c2FsdA", "name", "x")
    assert _verify(_craft({**PLAIN, "_sd": [disclosure_digest(d)]}, [d])).disclosed == {"name": "x"}


def test_garbage_separators() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    issuer_jwt, disclosures, _ = split_sd_jwt(sd_jwt)
    for bad in [
        issuer_jwt,  # no ~ at all
        f"{issuer_jwt}~~",
        f"{issuer_jwt}~~{disclosures[0]}~",
        f"~{disclosures[0]}~",
        f"{issuer_jwt}~{disclosures[0]} ~",
        f"{issuer_jwt}~{disclosures[0]}=~",
        f"{issuer_jwt}~{disclosures[0]}~garbage",
        f"{issuer_jwt}.x~",
        f"{issuer_jwt}\n~",
        "~",
    ]:
        assert _code(bad) == "malformed", bad


def test_key_binding_jwt_is_refused_for_now() -> None:
    sd_jwt = issue_sd_jwt(key=KEY, plain_claims=PLAIN, disclosable=SUBJECT)
    kb = sign_jwt({"aud": "x", "nonce": "n", "iat": NOW, "sd_hash": "h"}, OTHER, typ="kb+jwt")
    assert split_sd_jwt(sd_jwt + kb)[2] == kb
    assert _code(sd_jwt + kb) == "key-binding-unsupported"
    with pytest.raises(InvalidInput):
        present(sd_jwt + kb, {"name"})
