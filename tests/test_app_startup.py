"""What a served app does once started: its startup objects leave the cyclic collector's
scans (gc.freeze), in the process that serves the node and only there."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

from fastapi.testclient import TestClient

from exchange.node import Node
from exchange.settings import Settings
from gateway.app import create_app
from tests.conftest import BASE_URL

_SERVED = """
import gc, sys
from fastapi.testclient import TestClient
from gateway.app import create_app
app = create_app()  # the node from the environment, as `certex serve` runs it
before = gc.get_freeze_count()
with TestClient(app, base_url=sys.argv[1]) as http:
    assert http.get("/v1/ledger/checkpoint").status_code == 200
    print(before, gc.get_freeze_count())
"""


def test_a_served_app_freezes_what_startup_made(node: Node, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTEX_")}
    env.update({
        "CERTEX_HOME": str(settings.home),
        "CERTEX_DATABASE_URL": settings.effective_database_url,
        "CERTEX_NODE": settings.node,
        "CERTEX_BASE_URL": settings.base_url,
        "CERTEX_KEY_PASSPHRASE": settings.key_passphrase or "",
        "CERTEX_SUBJECT_KEY": settings.subject_key or "",
        "CERTEX_DEV": "false",
    })
    r = subprocess.run([sys.executable, "-c", _SERVED, BASE_URL], capture_output=True,
                       text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    before, after = map(int, r.stdout.split())
    assert before == 0 and after > 10_000  # modules, the node, the app: tens of thousands


def test_an_app_around_a_given_node_freezes_nothing(node: Node) -> None:
    before = gc.get_freeze_count()
    with TestClient(create_app(node), base_url=BASE_URL) as http:
        assert http.get("/v1/ledger/checkpoint").status_code == 200
    assert gc.get_freeze_count() == before
