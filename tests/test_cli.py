"""The CLI as a user runs it: real processes, real files."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import BUSINESS_LICENSE, access_token, add_agency, bearer, new_uscc


def _certex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exchange.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120, check=False)


def test_every_verb_has_help() -> None:
    for verb in ([], ["init"], ["serve"], ["agency", "add"], ["client", "add"], ["idp", "add"],
                 ["keys", "rotate"], ["verify"], ["dev-token"], ["jwk", "generate"],
                 ["jwk", "assertion"], ["receipt", "verify"], ["dev", "federation"],
                 ["federation"], ["ledger", "export"], ["audit", "verify"],
                 ["walkthrough"]):
        r = _certex(*verb, "--help")
        assert r.returncode == 0, (verb, r.stderr)
        assert "Usage" in r.stdout


def test_receipt_verify_accepts_the_right_leaf_only(http, node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    token = access_token(http, node, agency)
    for _ in range(3):
        r = http.post("/v1/certificates", headers=bearer(token), json={
            "type": "business-license", "subject_id": new_uscc(), "claims": BUSINESS_LICENSE})
        assert r.status_code == 201
    (tmp_path / "vkey").write_text(http.get("/v1/ledger/vkey").text)
    (tmp_path / "r1").write_text(http.get("/v1/ledger/receipts/1").text)
    from exchange.ledger import service

    leaves = dict(service.entries(node, 0, 3))
    ok = _certex("receipt", "verify", str(tmp_path / "r1"), "--vkey", str(tmp_path / "vkey"),
                 "--leaf", base64.b64encode(leaves[1]).decode())
    assert ok.returncode == 0, ok.stderr
    assert "OK: entry 1" in ok.stdout
    wrong = _certex("receipt", "verify", str(tmp_path / "r1"), "--vkey", str(tmp_path / "vkey"),
                    "--leaf", base64.b64encode(leaves[2]).decode())
    assert wrong.returncode == 1 and "INVALID" in wrong.stderr


def test_dev_token_refused_outside_dev_mode(settings) -> None:  # type: ignore[no-untyped-def]
    env = {"CERTEX_HOME": str(settings.home), "CERTEX_DATABASE_URL": settings.effective_database_url,
           "CERTEX_KEY_PASSPHRASE": settings.key_passphrase or "",
           "CERTEX_SUBJECT_KEY": settings.subject_key or "", "CERTEX_DEV": "0"}
    r = _certex("dev-token", "--subject", "91350100M000100Y43", env=env)
    assert r.returncode == 2
    assert "dev-mode-only" in r.stderr


def test_offline_verify_with_files(http, node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    token = access_token(http, node, agency)
    r = http.post("/v1/certificates", headers=bearer(token), json={
        "type": "business-license", "subject_id": new_uscc(), "claims": BUSINESS_LICENSE})
    cred, cert_id = r.json()["credential"], r.json()["id"]
    (tmp_path / "cred").write_text(cred)
    (tmp_path / "issuer.json").write_text(
        http.get(f"/.well-known/jwt-vc-issuer/issuers/{agency.client_id}").text)
    (tmp_path / "node.json").write_text(http.get("/.well-known/jwks.json").text)

    def status_file() -> str:
        uri = http.get(f"/v1/certificates/{cert_id}", headers=bearer(token)).json()[
            "status_list"]["uri"]
        (tmp_path / "status.jwt").write_text(http.get(uri.removeprefix(node.base_url)).text)
        return str(tmp_path / "status.jwt")

    args = ["verify", str(tmp_path / "cred"), "--jwks", str(tmp_path / "issuer.json"),
            "--jwks", str(tmp_path / "node.json")]
    ok = _certex(*args, "--status-list", status_file())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"valid": true' in ok.stdout
    http.post(f"/v1/certificates/{cert_id}/status", headers=bearer(token),
              json={"status": "revoked", "reason": "test"})
    revoked = _certex(*args, "--status-list", status_file())
    assert revoked.returncode == 1 and '"revoked"' in revoked.stdout
    # A key file that does not hold the issuer's key.
    (tmp_path / "other.json").write_text('{"keys": []}')
    unknown = _certex("verify", str(tmp_path / "cred"), "--jwks", str(tmp_path / "other.json"))
    assert unknown.returncode == 1 and "unknown-key" in unknown.stdout


def test_walkthrough_dev_token_names_the_node_it_talks_to(tmp_path: Path) -> None:
    """The subject's dev token is issued for the node the walk-through's $B names, so the
    printed commands work on any port (`make run PORT=...`), not only the default 8000."""
    import json

    from exchange.cli.walkthrough import render

    demo = tmp_path / "demo.json"
    demo.write_text(json.dumps({
        "agencies": {"market": "11310000WHGEG40F8D"},
        "auditor": "auditor-31-demo", "bank": "bank-31-demo", "bank_item": "002018001000",
        "demo_dir": str(tmp_path), "enterprise": "91310105XCLG31YA40",
    }))
    text = render("http://127.0.0.1:8123", demo)
    assert "B=http://127.0.0.1:8123" in text
    lines = [ln for ln in text.splitlines() if "certex dev-token" in ln]
    assert lines and all("CERTEX_BASE_URL=$B " in ln for ln in lines), lines
