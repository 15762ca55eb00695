"""The setup process: seed a node (after ``certex init``) through the library, as an operator
and its first clients would, and write what the load generator needs to a JSON file.

``python -m bench.world --out FILE --subjects S [--synthetic N]`` with the node's
``CERTEX_*`` environment. It registers an issuing agency (business licences), a bank that
may use the enterprise bank-account item, an identity provider; issues one business licence
to each of ``S`` enterprises and records each enterprise's consent (``max_uses`` 1000, the
most a consent may have) for the bank. ``--synthetic N`` first bulk-loads N ledger entries
(PostgreSQL; see :mod:`bench.synthetic`). Client private keys go into the output file only.

For a cross-province pull, ``--role holder --region 440106 --grantee 50:bank-bench`` seeds
the enterprises' home node (agency, licences, consents granted to a peer node's bank) and
``--role requester`` the bank's node (the bank only).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BANK_NATIONAL_ITEM = "18001000"  # 企业银行开户: needs the business licence
LICENSE: dict[str, Any] = {
    "name": "上海示范科技有限公司",
    "legal_representative": "张三",
    "registered_capital": "人民币1000万元",
    "address": "上海市徐汇区漕溪北路88号",
    "business_scope": "技术开发、技术咨询、技术服务",
    "established_on": "2015-06-01",
    "enterprise_type": "有限责任公司",
}


def _uscc(rng: random.Random, prefix: str, region: str) -> str:
    from exchange.identifiers import generate_uscc

    for _ in range(100_000):
        code = generate_uscc(rng, region=region)
        if code.startswith(prefix):
            return code
    raise RuntimeError("no USCC found")


def seed(out: Path, subjects: int, synthetic: int, *, role: str = "single",
         region: str = "310105", grantee: str = "bank-bench") -> dict[str, Any]:
    from exchange.catalog.service import list_items
    from exchange.certificates.service import IssueRequest, issue
    from exchange.clients.agencies import register_agency
    from exchange.clients.model import SCOPES_BY_KIND, Principal
    from exchange.clients.service import register_client
    from exchange.clients.tools import generate_client_jwk
    from exchange.consent.service import GrantRequest, grant
    from exchange.crypto.jws import SigningKey
    from exchange.ledger.service import commit_wait
    from exchange.node import Node
    from exchange.settings import Settings
    from exchange.subjects.service import Subject, add_identity_provider

    rng = random.Random(f"certex-bench-{time.time_ns()}")  # bench identifiers, not secrets
    node = Node.open(Settings(), pool_size=4)
    result: dict[str, Any] = {}
    try:
        if synthetic:
            from bench.synthetic import bulk_load

            result["synthetic"] = bulk_load(node, synthetic)
        node.start_ledger()
        t0 = time.perf_counter()
        now = node.clock.now()
        item = next(i for i in list_items() if i.national_item == BANK_NATIONAL_ITEM)
        agency_uscc = _uscc(rng, "11", region[:2] + "0000")
        agency_private, agency_public = generate_client_jwk()
        bank_private, bank_public = generate_client_jwk()
        idp_key = SigningKey.generate()
        idp_issuer = "https://idp.bench.certex.test"
        with node.sessions.begin() as s:
            if role in ("single", "holder"):
                register_agency(s, node, uscc=agency_uscc, name="市场监督管理局（bench）",
                                types=["business-license"], jwk=agency_public)
                add_identity_provider(s, issuer=idp_issuer,
                                      jwks={"keys": [idp_key.public_jwk()]}, now=now)
            if role in ("single", "requester"):
                register_client(s, client_id="bank-bench", name="bench bank", kind="bank",
                                jwk=bank_public, items=[item.basic_code], now=now)
        agency = Principal(client_id=agency_uscc, kind="agency",
                           scopes=frozenset(SCOPES_BY_KIND["agency"]), agency_uscc=agency_uscc,
                           token_exp=int(now) + 600)
        people = []
        for _ in range(subjects if role in ("single", "holder") else 0):
            subject_id = _uscc(rng, "91", region)
            with node.sessions.begin() as s:
                cert = issue(s, node, agency, IssueRequest(
                    type="business-license", subject_id=subject_id, claims=LICENSE))
            commit_wait(node, s)
            with node.sessions.begin() as s:
                consent = grant(s, node, Subject(subject_id, "enterprise", idp_issuer),
                                GrantRequest(grantee=grantee, item_code=item.basic_code,
                                             valid_until=int(now) + 30 * 86_400,
                                             max_uses=1000))
            commit_wait(node, s)
            people.append({"subject_id": subject_id, "consent_id": consent.id,
                           "certificate_id": cert.id, "credential": cert.credential,
                           "status_list": cert.status_list})
        spare = [_uscc(rng, "91", region) for _ in range(256)]
        from exchange.ledger.service import inclusion_proof
        from exchange.ledger.store import latest_checkpoint

        with node.engine.connect() as conn:
            cp = latest_checkpoint(conn)
        if cp is not None and cp.size:
            inclusion_proof(node, 0, None)  # the stored tree answers proofs
        result.update({
            "agency": {"client_id": agency_uscc, "private_jwk": agency_private},
            "bank": {"client_id": "bank-bench", "private_jwk": bank_private},
            "item_code": item.basic_code,
            "license": LICENSE,
            "subjects": people,
            "spare_usccs": spare,
            "ledger_size": cp.size if cp else 0,
            "seed_seconds": time.perf_counter() - t0,
            "seeded_at": datetime.now(UTC).isoformat(),
        })
    finally:
        node.close()
    out.write_text(json.dumps(result, ensure_ascii=False))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--subjects", type=int, default=64)
    p.add_argument("--synthetic", type=int, default=0)
    p.add_argument("--role", choices=("single", "holder", "requester"), default="single")
    p.add_argument("--region", default="310105", help="GB/T 2260 region of the enterprises")
    p.add_argument("--grantee", default="bank-bench", help="the consents' relying party")
    a = p.parse_args()
    r = seed(a.out, a.subjects, a.synthetic, role=a.role, region=a.region, grantee=a.grantee)
    print(json.dumps({k: r[k] for k in ("ledger_size", "seed_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
