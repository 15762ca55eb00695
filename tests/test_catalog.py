"""The national item catalog: every item valid, minimal claims, and 一码通办 resolution from any
form of item code of any province."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.catalog import (
    CatalogItem,
    Requirement,
    get_item,
    get_national_item,
    list_items,
    resolve_item,
    to_json,
)
from exchange.catalog.seed import ITEMS
from exchange.certificates.types import REGISTRY
from exchange.errors import InvalidIdentifier, InvalidInput, NotFound
from exchange.identifiers import (
    EXERCISE_LEVELS,
    ITEM_TYPES,
    PROVINCES,
    generate_uscc,
    parse_item_code,
)

BANK_ACCOUNT = "18001000"
BANK_ACCOUNT_CLAIMS = {
    "name",
    "legal_representative",
    "registered_capital",
    "address",
    "business_scope",
    "established_on",
}
SOME_PROVINCES = ("11", "31", "44", "51", "65")  # Beijing, Shanghai, Guangdong, Sichuan, Xinjiang


def _by_name(name: str) -> CatalogItem:
    (item,) = [i for i in list_items() if i.name == name]
    return item


def _implementation(basic: str, seed: int | str = 0, level: int = 3) -> str:
    agency = generate_uscc(random.Random(seed), region=f"{basic[:2]}0100")
    return f"{agency}{level}{basic}"


def _provincial(item: CatalogItem, province: str) -> str:
    return province + item.basic_code[2:]


# --- the data -------------------------------------------------------------------------------


def test_catalog_has_at_least_fifteen_distinct_items() -> None:
    items = list_items()
    assert len(items) >= 15
    assert len({i.national_item for i in items}) == len(items) == len(ITEMS)
    assert [i.national_item for i in items] == sorted(i.national_item for i in items)


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.national_item)
def test_every_item_is_valid(item: CatalogItem) -> None:
    code = parse_item_code(item.basic_code)
    assert code.form == "basic"
    assert code.region == "00"
    assert code.national_item == item.national_item
    assert len(item.national_item) == 8
    assert code.item_type == item.item_type
    assert item.item_type in ITEM_TYPES
    assert code.sub != "00Y"
    assert item.name.strip() and item.name_en.strip()
    assert item.requirements
    assert item.subject_kinds, "one subject must be able to hold every required type"
    for req in item.requirements:
        ctype = REGISTRY[req.certificate_type]
        names = {c.name for c in ctype.claims}
        assert req.claims
        assert set(req.claims) <= names
        assert len(set(req.claims)) == len(req.claims)
        assert "sub" not in req.claims
        assert item.requirement(req.certificate_type) is req


@pytest.mark.parametrize(
    ("name", "types"),
    [
        ("企业开办（设立登记）", {"resident-id", "property-certificate"}),
        ("企业变更登记", {"business-license"}),
        ("食品经营许可（核发）", {"business-license"}),
        ("建筑工程施工许可证核发", {"business-license", "property-certificate"}),
        ("个体工商户注册登记", {"resident-id", "property-certificate"}),
        ("二手房转移登记", {"property-certificate", "resident-id"}),
        ("异地就医备案", {"resident-id", "social-insurance-record"}),
        ("住房公积金贷款", {"resident-id", "housing-fund-record", "property-certificate"}),
        ("高新技术企业认定", {"business-license", "tax-payment-certificate"}),
        ("小微企业税收减免", {"business-license", "tax-payment-certificate"}),
        ("企业跨省迁移", {"business-license"}),
        ("企业银行开户", {"business-license"}),
        ("健康证明查验（餐饮从业人员）", {"health-certificate"}),
        ("社保缴费证明打印", {"social-insurance-record"}),
        ("居民身份证查验（个人银行开户）", {"resident-id"}),
    ],
)
def test_one_wang_tong_ban_items_require_the_expected_types(name: str, types: set[str]) -> None:
    assert set(_by_name(name).certificate_types) == types


def test_bank_account_opening_needs_only_the_required_business_licence_claims() -> None:
    item = get_national_item(BANK_ACCOUNT)
    assert item.name == "企业银行开户"
    assert item.item_type == "20"
    assert item.certificate_types == ("business-license",)
    (req,) = item.requirements
    assert set(req.claims) == BANK_ACCOUNT_CLAIMS
    assert len(req.claims) == 6
    optional = {c.name for c in REGISTRY["business-license"].claims if not c.required}
    assert optional == {"enterprise_type", "operating_until", "registration_authority"}
    assert not optional & set(req.claims)


def test_no_item_asks_for_every_claim_of_the_resident_id() -> None:
    # Minimal disclosure: no process needs a person's ethnicity or the issuing authority.
    for item in list_items():
        req = item.requirement("resident-id")
        if req is not None:
            assert "ethnicity" not in req.claims
            assert "issuing_authority" not in req.claims


def test_items_are_frozen() -> None:
    item = list_items()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.name = "x"  # type: ignore[misc]


# --- construction rejects bad items ---------------------------------------------------------

GOOD_REQ = ("business-license", ("name",))


def _make(**changes: object) -> CatalogItem:
    fields: dict[str, object] = {
        "national_item": "99001000",
        "basic_code": "002099001000",
        "name": "测试事项",
        "name_en": "Test item",
        "item_type": "20",
        "requirements": (Requirement(*GOOD_REQ),),
    }
    fields.update(changes)
    return CatalogItem(**fields)  # type: ignore[arg-type]


def test_a_well_formed_item_constructs() -> None:
    assert _make().national_item == "99001000"


@pytest.mark.parametrize(
    ("certificate_type", "claims", "fragment"),
    [
        ("driving-licence", ("name",), "unknown certificate type"),
        ("business-license", ("name", "birth_date"), "birth_date"),
        ("resident-id", ("name", "sub"), "'sub'"),
        ("resident-id", (), "must name its claims"),
        ("resident-id", ("name", "name"), "twice"),
    ],
)
def test_requirement_rejects(certificate_type: str, claims: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Requirement(certificate_type, claims)
    assert info.value.code == "invalid-catalog-item"
    assert fragment in info.value.detail


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"national_item": "99001001"}, "is national item 99001000"),
        ({"basic_code": "312099001000"}, "region 00"),
        ({"basic_code": "002099001000", "item_type": "01"}, "has item type 20"),
        ({"basic_code": "001099001000", "item_type": "10", "national_item": "99001000"}, None),
        ({"basic_code": "00209900100Y", "national_item": "9900100Y"}, "00Y"),
        ({"name": " "}, "name"),
        ({"requirements": ()}, "requires no certificate"),
        (
            {
                "requirements": (
                    Requirement(*GOOD_REQ),
                    Requirement("business-license", ("address",)),
                )
            },
            "twice",
        ),
        (
            {"requirements": (Requirement(*GOOD_REQ), Requirement("resident-id", ("name",)))},
            "no one subject",
        ),
    ],
)
def test_item_rejects(changes: dict[str, object], fragment: str | None) -> None:
    if fragment is None:
        assert _make(**changes).item_type == changes["item_type"]
        return
    with pytest.raises(InvalidInput) as info:
        _make(**changes)
    assert info.value.code == "invalid-catalog-item"
    assert fragment in info.value.detail


@pytest.mark.parametrize("basic_code", ["0020990010", "992099001000", "002099A01000", "00y"])
def test_item_with_malformed_basic_code_raises_the_identifier_error(basic_code: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        _make(basic_code=basic_code)
    assert info.value.code == "invalid-item-code"


def test_item_type_without_a_name_is_rejected() -> None:
    # "21" parses (it is in use) but has no confirmed name, so it cannot be shown.
    with pytest.raises(InvalidInput, match="named"):
        _make(basic_code="002199001000", item_type="21")


# --- resolution (一码通办) ---------------------------------------------------------------------


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.national_item)
def test_national_basic_code_resolves(item: CatalogItem) -> None:
    assert get_item(item.basic_code) is item
    assert get_national_item(item.national_item) is item


@pytest.mark.parametrize("province", SOME_PROVINCES)
@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.national_item)
def test_basic_codes_of_every_province_resolve_to_the_same_item(
    item: CatalogItem, province: str
) -> None:
    code = _provincial(item, province)
    resolved = resolve_item(code)
    assert resolved.item is item
    assert resolved.code.form == "basic"
    assert resolved.code.region == province


def test_guangdong_and_shanghai_bank_account_codes_are_one_item() -> None:
    gd, sh = get_item("442018001000"), get_item("312018001000")
    assert gd is sh is get_national_item(BANK_ACCOUNT)


@pytest.mark.parametrize("level", sorted(EXERCISE_LEVELS))
def test_implementation_codes_resolve(level: int) -> None:
    item = get_national_item(BANK_ACCOUNT)
    code = _implementation(_provincial(item, "44"), seed=f"bank-{level}", level=level)
    assert len(code) == 31
    resolved = resolve_item(code)
    assert resolved.item is item
    assert resolved.code.form == "implementation"
    assert resolved.code.level == level
    assert resolved.code.agency_uscc == code[:18]


def test_handling_codes_resolve() -> None:
    for n, item in enumerate(ITEMS):
        code = _implementation(_provincial(item, "51"), seed=n) + f"{n % 100:02d}"
        assert len(code) == 33
        resolved = resolve_item(code)
        assert resolved.item is item
        assert resolved.code.form == "handling"


@settings(max_examples=200, deadline=None)
@given(
    item=st.sampled_from(ITEMS),
    province=st.sampled_from(sorted(PROVINCES)),
    level=st.sampled_from(sorted(EXERCISE_LEVELS)),
    seed=st.integers(min_value=0, max_value=2**32),
    form=st.sampled_from(["basic", "implementation", "handling"]),
)
def test_any_form_from_any_province_resolves(
    item: CatalogItem, province: str, level: int, seed: int, form: str
) -> None:
    code = _provincial(item, province)
    if form != "basic":
        code = _implementation(code, seed=seed, level=level)
    if form == "handling":
        code += f"{seed % 100:02d}"
    assert get_item(code) is item


@pytest.mark.parametrize(
    "code",
    [
        "",
        "18001000",  # a national item is not an item code
        "0020180010",  # 10 characters
        "00201800100000",  # 14
        "992018001000",  # region 99 is not a province
        "003018001000",  # item type 30 does not exist
        "00201800A000",  # main item not digits
        "0020180010AB",  # sub item not digits
        "00201800100y",  # lower-case 00Y
        "００２０１８００１０００",  # full-width digits
        "9131010012345678X1" + "3" + "442018001000",  # USCC check fails
        "x" * 31,
        "x" * 33,
    ],
)
def test_malformed_codes_raise_the_identifier_error(code: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        get_item(code)
    assert info.value.code == "invalid-item-code"


def test_implementation_code_with_bad_level_is_rejected() -> None:
    good = _implementation("442018001000")
    for level in "089A":
        with pytest.raises(InvalidIdentifier, match="level"):
            get_item(good[:18] + level + good[19:])


def test_implementation_code_with_one_wrong_uscc_char_is_rejected() -> None:
    good = _implementation("442018001000", seed="tamper")
    assert get_item(good).national_item == BANK_ACCOUNT
    flipped = "1" if good[17] != "1" else "2"
    with pytest.raises(InvalidIdentifier, match="USCC"):
        get_item(good[:17] + flipped + good[18:])


def test_handling_code_with_non_digit_sequence_is_rejected() -> None:
    with pytest.raises(InvalidIdentifier, match="sequence"):
        get_item(_implementation("442018001000") + "0A")


@pytest.mark.parametrize(
    "code",
    [
        "002099999000",  # unknown main item
        "442018001001",  # known main item, unknown sub item
        "00201800100Y",  # bank account opening has no sub items
    ],
)
def test_unknown_items_are_not_found(code: str) -> None:
    with pytest.raises(NotFound) as info:
        get_item(code)
    assert info.value.code == "unknown-item"


def test_unknown_item_in_implementation_form_is_not_found() -> None:
    with pytest.raises(NotFound) as info:
        get_item(_implementation("312099999000"))
    assert info.value.code == "unknown-item"


def test_main_item_with_sub_items_names_them() -> None:
    with pytest.raises(NotFound) as info:
        get_item("44011000300Y")
    assert info.value.code == "unknown-item"
    assert info.value.extra["sub_items"] == ["000110003001", "000110003003"]


@pytest.mark.parametrize("value", ["", "1800100", "180010000", "00201800", "18001000 "])
def test_get_national_item_unknown_is_not_found(value: str) -> None:
    with pytest.raises(NotFound):
        get_national_item(value)


# --- JSON -----------------------------------------------------------------------------------


def test_to_json_shape() -> None:
    body = to_json(get_national_item(BANK_ACCOUNT))
    assert body == {
        "national_item": "18001000",
        "code": "002018001000",
        "name": "企业银行开户",
        "name_en": "Enterprise bank account opening",
        "item_type": "20",
        "item_type_name": "公共服务事项",
        "requirements": [
            {
                "certificate_type": "business-license",
                "claims": [
                    "name",
                    "legal_representative",
                    "registered_capital",
                    "address",
                    "business_scope",
                    "established_on",
                ],
            }
        ],
    }


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.national_item)
def test_to_json_round_trips_the_item(item: CatalogItem) -> None:
    body = to_json(item)
    assert body["item_type_name"] == ITEM_TYPES[item.item_type]
    rebuilt = CatalogItem(
        body["national_item"],
        body["code"],
        body["name"],
        body["name_en"],
        body["item_type"],
        tuple(Requirement(r["certificate_type"], tuple(r["claims"])) for r in body["requirements"]),
    )
    assert rebuilt == item
