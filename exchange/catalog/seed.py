"""The national item catalog's data: items of 一网通办 practice that use electronic certificates.

The codes are illustrative but well-formed GB/T 39554.1 codes. Real national item codes are
rarely published, so each main item here is a 2-digit department followed by a 3-digit
sequence, with these department numbers (not an official assignment):

    10 market regulation (市场监管)      11 housing and construction (住房城乡建设)
    12 natural resources (不动产登记)    13 medical insurance (医疗保障)
    14 housing provident fund (公积金)   15 science and technology (科技)
    16 taxation (税务)                   17 human resources and social security (人社)
    18 banking (银行业金融机构)

Sub items are ``000`` (no sub items) or ``001``-``999``; the basic codes are the national
list's (region ``00``). Claims are kept to what each process really reads: the subject's
identifier (``sub``) is bound to every certificate and is never listed, and optional claims
appear only where the process needs them (minimal disclosure, DESIGN.md §2.4).
"""

from __future__ import annotations

from exchange.catalog.model import CatalogItem, Requirement


def _item(
    national_item: str,
    basic_code: str,
    item_type: str,
    name: str,
    name_en: str,
    *requirements: Requirement,
) -> CatalogItem:
    return CatalogItem(national_item, basic_code, name, name_en, item_type, requirements)


def _needs(certificate_type: str, *claims: str) -> Requirement:
    return Requirement(certificate_type, claims)


# A table: one item per block, kept as written rather than one argument per line.
# fmt: off
ITEMS: tuple[CatalogItem, ...] = (
    # --- market regulation (10) --------------------------------------------------------------
    _item(
        "10001000", "000110001000", "01",
        "企业开办（设立登记）", "Enterprise establishment (incorporation registration)",
        # The legal representative's identity, and the title to the registered premises (住所).
        _needs("resident-id", "name"),
        _needs("property-certificate", "location", "usage"),
    ),
    _item(
        "10002000", "000110002000", "01",
        "企业变更登记", "Enterprise change registration",
        # The registered particulars as they stand before the change.
        _needs("business-license", "name", "legal_representative", "registered_capital",
               "address", "business_scope"),
    ),
    _item(
        "10003001", "000110003001", "01",
        "食品经营许可（核发）", "Food business licence (first issue)",
        _needs("business-license", "name", "legal_representative", "address", "business_scope"),
    ),
    _item(
        "10003003", "000110003003", "01",
        "食品经营许可（延续）", "Food business licence (renewal)",
        _needs("food-business-license", "operator_name", "license_number", "business_items",
               "address", "valid_until"),
        _needs("business-license", "name", "legal_representative"),
    ),
    _item(
        "10004000", "000110004000", "01",
        "个体工商户注册登记", "Individual business registration",
        # The operator's name and domicile are registered particulars; plus the premises.
        _needs("resident-id", "name", "address"),
        _needs("property-certificate", "location", "usage"),
    ),
    _item(
        "10005000", "000110005000", "01",
        "企业跨省迁移", "Enterprise relocation to another province",
        # The whole registration file moves to the new registration authority.
        _needs("business-license", "name", "enterprise_type", "legal_representative",
               "registered_capital", "address", "business_scope", "established_on",
               "registration_authority"),
    ),
    _item(
        "10006000", "000610006000", "06",
        "健康证明查验（餐饮从业人员）", "Health certificate check (catering staff)",
        # A health certificate is valid for one year from the examination.
        _needs("health-certificate", "name", "occupation_category", "exam_date"),
    ),
    # --- housing and construction (11) -------------------------------------------------------
    _item(
        "11001000", "000111001000", "01",
        "建筑工程施工许可证核发", "Construction permit issuance",
        # The construction unit, and its land-use right (用地批准手续).
        _needs("business-license", "name", "legal_representative"),
        _needs("property-certificate", "certificate_number", "location", "right_type", "usage"),
    ),
    _item(
        "11002000", "001011002000", "10",
        "建设工程竣工验收备案", "Construction completion acceptance filing",
        _needs("construction-permit", "permit_number", "project_name", "construction_unit",
               "address", "scale"),
    ),
    # --- natural resources: real-estate registration (12) ------------------------------------
    _item(
        "12001002", "000712001002", "07",
        "二手房转移登记", "Second-hand housing transfer registration",
        # The register entry being transferred, co-owners included, and the seller's identity.
        _needs("property-certificate", "certificate_number", "owner_name", "co_ownership",
               "location", "unit_number", "right_type", "usage", "area_m2"),
        _needs("resident-id", "name"),
    ),
    # --- medical insurance (13) ---------------------------------------------------------------
    _item(
        "13001000", "002013001000", "20",
        "异地就医备案", "Cross-region medical treatment filing",
        # Insured for basic medical insurance, and still paying.
        _needs("resident-id", "name"),
        _needs("social-insurance-record", "insurance_types", "period_to"),
    ),
    # --- housing provident fund (14) ----------------------------------------------------------
    _item(
        "14001000", "002014001000", "20",
        "住房公积金贷款", "Housing provident fund loan",
        # Age bounds the loan term; balance and deposit bound the amount; the home is collateral.
        _needs("resident-id", "name", "birth_date"),
        _needs("housing-fund-record", "monthly_deposit", "balance", "account_status"),
        _needs("property-certificate", "certificate_number", "location", "right_type", "area_m2"),
    ),
    _item(
        "14002001", "002014002001", "20",
        "住房公积金提取（购买自住住房）", "Housing provident fund withdrawal (home purchase)",
        _needs("housing-fund-record", "balance", "account_status"),
        _needs("property-certificate", "certificate_number", "location", "usage"),
    ),
    # --- science and technology (15) ----------------------------------------------------------
    _item(
        "15001000", "000715001000", "07",
        "高新技术企业认定", "High-tech enterprise recognition",
        # Registered for at least a year, in a qualifying field, with its tax record.
        _needs("business-license", "name", "business_scope", "established_on"),
        _needs("tax-payment-certificate", "tax_type", "amount", "period_from", "period_to"),
    ),
    # --- taxation (16) -------------------------------------------------------------------------
    _item(
        "16001000", "001016001000", "10",
        "小微企业税收减免", "Small and micro enterprise tax relief",
        # Not in a restricted industry (business scope), and the tax actually paid.
        _needs("business-license", "name", "business_scope"),
        _needs("tax-payment-certificate", "tax_type", "amount", "period_from", "period_to"),
    ),
    # --- human resources and social security (17) --------------------------------------------
    _item(
        "17001000", "002017001000", "20",
        "社保缴费证明打印", "Social insurance payment certificate printing",
        # The printed certificate reproduces the whole record.
        _needs("social-insurance-record", "name", "employer", "insurance_types", "period_from",
               "period_to", "months_paid"),
    ),
    _item(
        "17002000", "000517002000", "05",
        "失业保险金申领", "Unemployment insurance benefit claim",
        # Months paid set the benefit period; the last employer confirms the separation.
        _needs("resident-id", "name"),
        _needs("social-insurance-record", "employer", "insurance_types", "months_paid"),
    ),
    # --- banking (18) --------------------------------------------------------------------------
    _item(
        "18001000", "002018001000", "20",
        "企业银行开户", "Enterprise bank account opening",
        # Only what the bank must record about the enterprise: the required claims of the
        # licence; type, term and registration authority are not needed to open an account.
        _needs("business-license", "name", "legal_representative", "registered_capital",
               "address", "business_scope", "established_on"),
    ),
    _item(
        "18002000", "002018002000", "20",
        "居民身份证查验（个人银行开户）", "Resident ID check (personal bank account opening)",
        # Customer identification records name, sex and address; birth date is in the ID number.
        _needs("resident-id", "name", "sex", "address"),
    ),
)
# fmt: on
