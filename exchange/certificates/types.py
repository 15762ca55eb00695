"""The certificate-type registry: what each electronic licence or record contains.

Type codes follow the GB/T 36904 form used in the identifier vectors: the USCC of the
national licence-type registry authority followed by a 3-digit sequence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from exchange.errors import InvalidInput

ClaimType = Literal["string", "integer", "number", "boolean", "date", "array"]
SubjectKind = Literal["person", "enterprise"]

TYPE_AUTHORITY = "11100000000013338W"
VCT_PREFIX = "urn:cn:gov:certex:vct:"
MAX_STRING = 2000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """One claim of a certificate type: its JSON type, whether it must be present, its label."""

    name: str
    type: ClaimType
    label: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class CertificateType:
    """A kind of electronic certificate (电子证照) the node can issue."""

    key: str
    name: str
    name_en: str
    seq: int
    subject_kinds: tuple[SubjectKind, ...]
    claims: tuple[ClaimSpec, ...]

    @property
    def vct(self) -> str:
        return f"{VCT_PREFIX}{self.key}:1"

    @property
    def type_code(self) -> str:
        return f"{TYPE_AUTHORITY}{self.seq:03d}"

    def claim(self, name: str) -> ClaimSpec | None:
        return next((c for c in self.claims if c.name == name), None)

    def validate_claims(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``claims`` against this type: no unknown, none missing, each of its JSON type."""
        unknown = sorted(set(claims) - {c.name for c in self.claims})
        if unknown:
            raise InvalidInput(
                f"claims not defined for {self.key}: {', '.join(unknown)}", code="unknown-claim"
            )
        out: dict[str, Any] = {}
        for spec in self.claims:
            if spec.name not in claims or claims[spec.name] is None:
                if spec.required:
                    raise InvalidInput(
                        f"claim {spec.name!r} is required for {self.key}", code="missing-claim"
                    )
                continue
            out[spec.name] = _check_type(spec, claims[spec.name])
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "name_en": self.name_en,
            "vct": self.vct,
            "type_code": self.type_code,
            "subject_kinds": list(self.subject_kinds),
            "claims": [
                {"name": c.name, "type": c.type, "label": c.label, "required": c.required}
                for c in self.claims
            ],
        }


def _check_type(spec: ClaimSpec, value: Any) -> Any:  # noqa: PLR0912  one branch per JSON type
    def bad() -> InvalidInput:
        return InvalidInput(
            f"claim {spec.name!r} must be a {spec.type}, not {type(value).__name__}",
            code="ill-typed-claim",
        )

    match spec.type:
        case "string":
            if not isinstance(value, str) or not value.strip():
                raise bad()
            if len(value) > MAX_STRING:
                raise InvalidInput(f"claim {spec.name!r} is too long", code="ill-typed-claim")
        case "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad()
        case "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad()
        case "boolean":
            if not isinstance(value, bool):
                raise bad()
        case "date":
            if not isinstance(value, str) or not _DATE.fullmatch(value):
                raise bad()
            try:
                date.fromisoformat(value)
            except ValueError as e:
                raise InvalidInput(
                    f"claim {spec.name!r} is not a calendar date", code="ill-typed-claim"
                ) from e
        case "array":
            if not isinstance(value, list) or not all(
                isinstance(v, str) and 0 < len(v) <= MAX_STRING for v in value
            ):
                raise InvalidInput(
                    f"claim {spec.name!r} must be a list of strings", code="ill-typed-claim"
                )
    return value


def _c(name: str, type_: ClaimType, label: str, *, required: bool = True) -> ClaimSpec:
    return ClaimSpec(name, type_, label, required)


_TYPES = (
    CertificateType(
        "business-license",
        "营业执照",
        "Business licence",
        1,
        ("enterprise",),
        (
            _c("name", "string", "名称"),
            _c("enterprise_type", "string", "类型", required=False),
            _c("legal_representative", "string", "法定代表人"),
            _c("registered_capital", "string", "注册资本"),
            _c("address", "string", "住所"),
            _c("business_scope", "string", "经营范围"),
            _c("established_on", "date", "成立日期"),
            _c("operating_until", "date", "营业期限至", required=False),
            _c("registration_authority", "string", "登记机关", required=False),
        ),
    ),
    CertificateType(
        "resident-id",
        "居民身份证",
        "Resident identity card",
        2,
        ("person",),
        (
            _c("name", "string", "姓名"),
            _c("sex", "string", "性别"),
            _c("ethnicity", "string", "民族"),
            _c("birth_date", "date", "出生"),
            _c("address", "string", "住址"),
            _c("issuing_authority", "string", "签发机关"),
        ),
    ),
    CertificateType(
        "property-certificate",
        "不动产权证书",
        "Real-estate title certificate",
        3,
        ("person", "enterprise"),
        (
            _c("certificate_number", "string", "不动产权证号"),
            _c("owner_name", "string", "权利人"),
            _c("co_ownership", "string", "共有情况", required=False),
            _c("location", "string", "坐落"),
            _c("unit_number", "string", "不动产单元号"),
            _c("right_type", "string", "权利类型"),
            _c("usage", "string", "用途"),
            _c("area_m2", "number", "面积（平方米）"),
        ),
    ),
    CertificateType(
        "social-insurance-record",
        "社保缴费记录",
        "Social-insurance payment record",
        4,
        ("person",),
        (
            _c("name", "string", "姓名"),
            _c("employer", "string", "参保单位"),
            _c("insurance_types", "array", "险种"),
            _c("period_from", "date", "起始日期"),
            _c("period_to", "date", "截止日期"),
            _c("months_paid", "integer", "累计缴费月数"),
        ),
    ),
    CertificateType(
        "food-business-license",
        "食品经营许可证",
        "Food business licence",
        5,
        ("enterprise",),
        (
            _c("operator_name", "string", "经营者名称"),
            _c("license_number", "string", "许可证编号"),
            _c("business_items", "array", "经营项目"),
            _c("address", "string", "经营场所"),
            _c("valid_until", "date", "有效期至"),
        ),
    ),
    CertificateType(
        "health-certificate",
        "健康证",
        "Health certificate",
        6,
        ("person",),
        (
            _c("name", "string", "姓名"),
            _c("sex", "string", "性别"),
            _c("occupation_category", "string", "从业类别"),
            _c("exam_date", "date", "体检日期"),
            _c("exam_institution", "string", "体检机构"),
        ),
    ),
    CertificateType(
        "construction-permit",
        "建筑工程施工许可证",
        "Construction permit",
        7,
        ("enterprise",),
        (
            _c("permit_number", "string", "编号"),
            _c("project_name", "string", "工程名称"),
            _c("construction_unit", "string", "建设单位"),
            _c("address", "string", "建设地址"),
            _c("scale", "string", "建设规模"),
            _c("contract_price", "number", "合同价格（万元）"),
        ),
    ),
    CertificateType(
        "tax-payment-certificate",
        "完税证明",
        "Tax payment certificate",
        8,
        ("person", "enterprise"),
        (
            _c("taxpayer_name", "string", "纳税人名称"),
            _c("tax_type", "string", "税种"),
            _c("amount", "number", "实缴金额（元）"),
            _c("period_from", "date", "所属期起"),
            _c("period_to", "date", "所属期止"),
            _c("tax_authority", "string", "税务机关"),
        ),
    ),
    CertificateType(
        "housing-fund-record",
        "住房公积金缴存证明",
        "Housing provident fund record",
        9,
        ("person",),
        (
            _c("name", "string", "姓名"),
            _c("employer", "string", "缴存单位"),
            _c("monthly_deposit", "number", "月缴存额（元）"),
            _c("balance", "number", "账户余额（元）"),
            _c("account_status", "string", "账户状态"),
        ),
    ),
)

REGISTRY: Mapping[str, CertificateType] = {t.key: t for t in _TYPES}
BY_VCT: Mapping[str, CertificateType] = {t.vct: t for t in _TYPES}


def get_type(key: str) -> CertificateType:
    """The registered type ``key``; InvalidInput if there is none."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise InvalidInput(
            f"unknown certificate type {key!r}; see GET /v1/certificate-types",
            code="unknown-certificate-type",
        ) from None
