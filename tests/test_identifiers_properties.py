"""Property tests for exchange.identifiers: generated identifiers validate, and every
single-character substitution of one (any position, any other character of the alphabet)
is rejected."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.errors import InvalidIdentifier
from exchange.identifiers import (
    EXERCISE_LEVELS,
    ITEM_TYPES,
    PROVINCES,
    USCC_ALPHABET,
    generate_certificate_id,
    generate_resident_id,
    generate_uscc,
    make_certificate_id,
    parse_certificate_id,
    parse_item_code,
    parse_resident_id,
    parse_uscc,
    validate_resident_id,
    validate_uscc,
)
from exchange.identifiers.iso7064 import ALPHANUMERIC, DIGITS

TODAY = date(2026, 1, 1)
RESIDENT_ALPHABET = DIGITS + "X"
CERTIFICATE_ALPHABET = ALPHANUMERIC + "."

provinces = st.sampled_from(sorted(PROVINCES))
regions = st.builds(
    lambda p, rest: f"{p}{rest:04d}", provinces, st.integers(min_value=0, max_value=9999)
)
births = st.dates(min_value=date(1800, 1, 1), max_value=TODAY)


def _substitutions(value: str, alphabet: str) -> list[str]:
    return [
        value[:i] + ch + value[i + 1 :]
        for i, original in enumerate(value)
        for ch in alphabet
        if ch != original
    ]


def _rejected(validate: Callable[[str], object], candidate: str) -> bool:
    try:
        validate(candidate)
    except InvalidIdentifier:
        return True
    return False


# --- resident ID -------------------------------------------------------------------------


@given(rng=st.randoms(use_true_random=False), birth=births | st.none(), region=regions | st.none())
def test_generated_resident_ids_validate(
    rng: random.Random, birth: date | None, region: str | None
) -> None:
    value = generate_resident_id(rng, birth=birth, region=region)
    parsed = parse_resident_id(value, today=TODAY)
    if birth is not None:
        assert parsed.birth_date == birth
    if region is not None:
        assert parsed.region == region


@settings(max_examples=200)
@given(rng=st.randoms(use_true_random=False), birth=births, region=regions)
def test_resident_id_substitutions_rejected(rng: random.Random, birth: date, region: str) -> None:
    value = generate_resident_id(rng, birth=birth, region=region)
    for candidate in _substitutions(value, RESIDENT_ALPHABET):
        assert _rejected(validate_resident_id, candidate), candidate


# --- USCC --------------------------------------------------------------------------------


@given(rng=st.randoms(use_true_random=False), region=regions | st.none() | st.just("100000"))
def test_generated_usccs_validate(rng: random.Random, region: str | None) -> None:
    value = generate_uscc(rng, region=region)
    parsed = parse_uscc(value)
    if region is not None:
        assert parsed.region == region


@settings(max_examples=200)
@given(rng=st.randoms(use_true_random=False))
def test_uscc_substitutions_rejected(rng: random.Random) -> None:
    value = generate_uscc(rng)
    for candidate in _substitutions(value, USCC_ALPHABET):
        assert _rejected(validate_uscc, candidate), candidate


# --- certificate identifier --------------------------------------------------------------

serials = st.text(alphabet=DIGITS, min_size=1, max_size=20)
versions = st.integers(min_value=1, max_value=999)


@given(rng=st.randoms(use_true_random=False), serial=serials, version=versions)
def test_certificate_id_round_trip(rng: random.Random, serial: str, version: int) -> None:
    type_code = generate_uscc(rng) + f"{rng.randint(0, 999):03d}"
    issuer = generate_uscc(rng)
    value = make_certificate_id(type_code, issuer, serial, version)
    parsed = parse_certificate_id(value)
    assert (parsed.type_code, parsed.issuer, parsed.serial, parsed.version) == (
        type_code,
        issuer,
        serial,
        version,
    )
    assert str(parsed) == value


@given(rng=st.randoms(use_true_random=False), version=versions)
def test_generated_certificate_ids_validate(rng: random.Random, version: int) -> None:
    assert str(parse_certificate_id(generate_certificate_id(rng, version=version)))


@settings(max_examples=50)
@given(rng=st.randoms(use_true_random=False), version=versions)
def test_certificate_id_substitutions_rejected(rng: random.Random, version: int) -> None:
    value = generate_certificate_id(rng, version=version)
    for candidate in _substitutions(value, CERTIFICATE_ALPHABET):
        assert _rejected(parse_certificate_id, candidate), candidate


# --- item codes --------------------------------------------------------------------------


@given(
    rng=st.randoms(use_true_random=False),
    region=st.sampled_from(["00", *sorted(PROVINCES)]),
    item_type=st.sampled_from(sorted(ITEM_TYPES)),
    main=st.text(alphabet=DIGITS, min_size=5, max_size=5),
    sub=st.sampled_from(["000", "00Y"]) | st.integers(1, 999).map(lambda n: f"{n:03d}"),
    level=st.sampled_from(sorted(EXERCISE_LEVELS)),
    sequence=st.integers(0, 99).map(lambda n: f"{n:02d}"),
)
def test_item_code_forms_resolve_to_one_national_item(
    rng: random.Random,
    region: str,
    item_type: str,
    main: str,
    sub: str,
    level: int,
    sequence: str,
) -> None:
    basic = region + item_type + main + sub
    implementation = generate_uscc(rng) + str(level) + basic
    handling = implementation + sequence
    parsed = [parse_item_code(v) for v in (basic, implementation, handling)]
    assert [p.form for p in parsed] == ["basic", "implementation", "handling"]
    assert {p.national_item for p in parsed} == {main + sub}
    assert {p.basic for p in parsed} == {basic}
    assert parsed[1].level == parsed[2].level == level
