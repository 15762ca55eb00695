"""``certex init``: schema migrations, node keys, and (dev mode) demo agencies and clients."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from exchange.catalog.service import list_items
from exchange.clients.agencies import register_agency
from exchange.clients.service import register_client
from exchange.clients.tools import write_jwk_pair
from exchange.identifiers import PROVINCES, generate_uscc
from exchange.keys.service import DEV_ROLES, NODE_ROLES
from exchange.node import Node
from exchange.persistence.migrate import upgrade
from exchange.persistence.models import Agency, Client, KeyRecord
from exchange.settings import Settings


def migrate(settings: Settings) -> None:
    upgrade(settings.effective_database_url)


def ensure_node_keys(session: Session, node: Node) -> list[str]:
    """Create a key for every node role that has none; returns the roles created."""
    made = []
    for role in (*NODE_ROLES, *(DEV_ROLES if node.settings.dev else ())):
        if session.scalar(select(KeyRecord.kid).where(KeyRecord.owner == role).limit(1)) is None:
            node.keys.create(session, role)
            made.append(role)
    return made


BANK_ITEMS = ("18001000", "18002000")  # enterprise and personal bank account opening


@dataclass(frozen=True, slots=True)
class DemoAgency:
    key: str
    name: str
    types: tuple[str, ...]


_DEMO_AGENCIES = (
    DemoAgency("market", "{p}市场监督管理局", ("business-license", "food-business-license")),
    DemoAgency("police", "{p}公安厅", ("resident-id",)),
    DemoAgency("land", "{p}自然资源厅（不动产登记局）", ("property-certificate",)),
    DemoAgency("hrss", "{p}人力资源和社会保障厅", ("social-insurance-record",)),
    DemoAgency("health", "{p}卫生健康委员会", ("health-certificate",)),
    DemoAgency("housing", "{p}住房和城乡建设厅", ("construction-permit", "housing-fund-record")),
    DemoAgency("tax", "国家税务总局{p}税务局", ("tax-payment-certificate",)),
)


def uscc_with_prefix(rng: random.Random, region: str, prefix: str) -> str:
    """A valid USCC whose first two characters (authority + category) are ``prefix``:
    ``11`` for a government organ (机关), ``91`` for an enterprise (企业)."""
    for _ in range(100_000):
        code = generate_uscc(rng, region=region)
        if code.startswith(prefix):
            return code
    raise RuntimeError(f"no USCC with prefix {prefix}")  # pragma: no cover


def seed_demo(session: Session, node: Node, demo_dir: Path) -> dict[str, object]:
    """Demo agencies, a bank and an auditor, with their client keys under ``demo_dir``.

    Idempotent: a second run changes nothing. Returns what the walk-through needs.
    """
    province = node.settings.node
    region = f"{province}0000"
    rng = random.Random(f"certex-demo-{province}")  # noqa: S311  deterministic demo identifiers
    p = PROVINCES[province]
    demo_dir.mkdir(parents=True, exist_ok=True)
    agencies: dict[str, str] = {}
    for a in _DEMO_AGENCIES:
        uscc = uscc_with_prefix(rng, region, "11")
        agencies[a.key] = uscc
        if session.get(Agency, uscc) is not None:
            continue
        pub = write_jwk_pair(demo_dir / f"agency-{a.key}.jwk", demo_dir / f"agency-{a.key}.pub.jwk")
        register_agency(session, node, uscc=uscc, name=a.name.format(p=p), types=a.types, jwk=pub)
    bank_items = [i.basic_code for i in list_items() if i.national_item in BANK_ITEMS]
    for cid, name, kind, items in (
        (f"bank-{province}-demo", f"{p}示范银行", "bank", bank_items),
        (f"auditor-{province}-demo", f"{p}审计局", "auditor", []),
    ):
        if session.get(Client, cid) is None:
            pub = write_jwk_pair(demo_dir / f"{cid}.jwk", demo_dir / f"{cid}.pub.jwk")
            register_client(session, client_id=cid, name=name, kind=kind, jwk=pub, items=items,
                            now=node.clock.now())
    enterprise = uscc_with_prefix(rng, f"{province}0105", "91")
    info: dict[str, object] = {
        "agencies": agencies,
        "bank": f"bank-{province}-demo",
        "auditor": f"auditor-{province}-demo",
        "enterprise": enterprise,
        "bank_item": next(c for c in bank_items if c.endswith("18001000")),
        "demo_dir": str(demo_dir),
    }
    (demo_dir / "demo.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    return info
