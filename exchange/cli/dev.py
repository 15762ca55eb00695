"""``certex dev federation``: three province nodes on loopback, seeded, with a walk-through."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from exchange.devfed import LocalFederation

# The verbs here import the node's machinery (SQLAlchemy, alembic) inside their bodies, so
# every other verb — `certex audit verify` above all — starts without it.

dev_app = typer.Typer(help="Development helpers.", no_args_is_help=True)
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _token(base: str, client_id: str, key_file: Path) -> str:
    import httpx  # here, not at the top: every certex verb imports this module

    from exchange.clients.tools import client_assertion, signing_key_from_private_jwk

    key = signing_key_from_private_jwk(json.loads(key_file.read_text()))
    a = client_assertion(key, client_id=client_id, token_url=f"{base}/oauth2/token",
                         now=time.time())
    r = httpx.post(f"{base}/oauth2/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION,
        "client_assertion": a})
    r.raise_for_status()
    return str(r.json()["access_token"])


def seed(lf: LocalFederation) -> dict[str, str]:
    import httpx

    from exchange.bootstrap import uscc_with_prefix
    from exchange.catalog.service import get_national_item
    from exchange.clients.agencies import register_agency
    from exchange.clients.service import register_client
    from exchange.clients.tools import write_jwk_pair
    from exchange.node import Node
    from exchange.subjects.service import issue_dev_token

    """Guangdong market regulation issues a licence to a Guangdong enterprise, which grants a
    Chongqing bank consent at its home node (44) for 企业银行开户."""
    rng = random.Random("certex-dev-federation")  # noqa: S311  demo identifiers
    demo = lf.root / "demo"
    agency = uscc_with_prefix(rng, "440000", "11")
    enterprise = uscc_with_prefix(rng, "440106", "91")
    bank = "bank-cq-1"
    item = get_national_item("18001000").basic_code
    n44, n50 = Node.open(lf.settings("44"), pool_size=2), Node.open(lf.settings("50"), pool_size=2)
    try:
        with n44.sessions.begin() as s:
            pub = write_jwk_pair(demo / "agency-gd.jwk", demo / "agency-gd.pub.jwk")
            register_agency(s, n44, uscc=agency, name="广东省市场监督管理局",
                            types=["business-license"], jwk=pub)
        with n50.sessions.begin() as s:
            pub = write_jwk_pair(demo / f"{bank}.jwk", demo / f"{bank}.pub.jwk")
            register_client(s, client_id=bank, name="重庆示范银行", kind="bank", jwk=pub,
                            items=[item], now=time.time())
        with n44.reads() as s:
            ent_token = issue_dev_token(s, n44, enterprise)
    finally:
        n44.close()
        n50.close()
    b44 = lf.nodes["44"].base_url
    agency_token = _token(b44, agency, demo / "agency-gd.jwk")
    r = httpx.post(f"{b44}/v1/certificates", headers={"Authorization": f"Bearer {agency_token}"},
                   json={"type": "business-license", "subject_id": enterprise, "claims": {
                       "name": "广州示范贸易有限公司", "legal_representative": "陈六",
                       "registered_capital": "人民币500万元", "address": "广州市天河区天河路1号",
                       "business_scope": "货物进出口", "established_on": "2018-03-01",
                       "enterprise_type": "有限责任公司"}})
    r.raise_for_status()
    until = datetime.fromtimestamp(time.time() + 30 * 86400, UTC).isoformat()
    r = httpx.post(f"{b44}/v1/consents", headers={"Authorization": f"Bearer {ent_token}"},
                   json={"grantee": f"50:{bank}", "item_code": item, "valid_until": until,
                         "max_uses": 3})
    r.raise_for_status()
    return {"enterprise": enterprise, "bank": bank, "item": item, "consent": r.json()["id"],
            "bank_key": str(demo / f"{bank}.jwk")}


@dev_app.command("federation")
def federation(
    root: Annotated[Path, typer.Option(help="where the nodes keep their data")] = Path(
        "var/federation"),
    provinces: Annotated[str, typer.Option(help="comma-separated province codes")] = "44,50,31",
) -> None:
    """Start 44 Guangdong, 50 Chongqing and 31 Shanghai as separate processes with separate
    SQLite files and a generated federation file, seed demo data, print the walk-through,
    and keep running until Ctrl+C."""
    codes = tuple(p.strip() for p in provinces.split(","))
    if not {"44", "50"} <= set(codes):
        raise typer.BadParameter("the demo needs at least 44 and 50")
    if root.exists() and any(root.iterdir()):
        import shutil

        shutil.rmtree(root)
    from exchange.devfed import LocalFederation

    lf = LocalFederation(root.resolve(), codes)
    lf.setup()
    lf.start()
    try:
        info = seed(lf)
        b50, b44 = lf.nodes["50"].base_url, lf.nodes["44"].base_url
        typer.echo(f"""
federation running: {", ".join(f"{p} {n.base_url}" for p, n in lf.nodes.items())}
federation file: {lf.federation_file}

# A Chongqing bank (node 50) opens an account for a Guangdong enterprise (node 44), which
# consented at its home node. The bank calls only its own node:
A=$(.venv/bin/certex jwk assertion --client-id {info["bank"]} \\
    --key {info["bank_key"]} --token-url {b50}/oauth2/token)
T=$(curl -s {b50}/oauth2/token -d grant_type=client_credentials \\
    -d client_assertion_type={ASSERTION} -d client_assertion=$A \\
    | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
curl -s {b50}/v1/pull -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \\
  -d '{{"subject_id": "{info["enterprise"]}", "item_code": "{info["item"]}", "consent_id": "{info["consent"]}"}}' \\
  | .venv/bin/python -m json.tool
# → credentials (minimal disclosures) and "receipts": {{"50": ..., "44": ...}}, each a
#   tlog-proof@v1 verifiable against that node's checkpoint:
curl -s {b50}/v1/ledger/checkpoint; curl -s {b44}/v1/ledger/checkpoint

Press Ctrl+C to stop the nodes.""")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        lf.stop()
