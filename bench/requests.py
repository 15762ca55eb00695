"""The requests the HTTP figures send, built against a seeded node (``bench.world``)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.loadgen import Request

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def mint_token(base_url: str, client: dict[str, Any], post: Callable[..., Any] = httpx.post
               ) -> str:
    """A node access token the way a client gets one: RFC 7523 assertion → /oauth2/token."""
    from exchange.clients.tools import client_assertion, signing_key_from_private_jwk

    key = signing_key_from_private_jwk(client["private_jwk"])
    assertion = client_assertion(key, client_id=client["client_id"],
                                 token_url=f"{base_url}/oauth2/token", now=time.time())
    r = post(f"{base_url}/oauth2/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion})
    r.raise_for_status()
    return str(r.json()["access_token"])


def build_requests(base_url: str, world: dict[str, Any], post: Callable[..., Any] = httpx.post
                   ) -> dict[str, list[Request]]:
    def body(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode()

    agency = (("Authorization", f"Bearer {mint_token(base_url, world['agency'], post)}"),)
    bank = (("Authorization", f"Bearer {mint_token(base_url, world['bank'], post)}"),)
    people = world["subjects"]
    rng = random.Random(7)  # which ledger indices to prove: sampling, not a secret
    size = int(world["ledger_size"])
    return {
        "issue": [Request("POST", "/v1/certificates", body({
            "type": "business-license", "subject_id": s, "claims": world["license"]}), agency)
            for s in world["spare_usccs"]],
        "verify": [Request("POST", "/v1/verify", body({"credential": p["credential"]}))
                   for p in people],
        "pull": [Request("POST", "/v1/pull", body({
            "subject_id": p["subject_id"], "item_code": world["item_code"],
            "consent_id": p["consent_id"]}), bank) for p in people],
        "status": [Request("GET", f"/v1/status-lists/{people[0]['status_list']}")],
        "inclusion": [Request("GET", f"/v1/ledger/proof/inclusion?index={rng.randrange(size)}"
                                     f"&size={size}") for _ in range(1000)],
    }


def smoke(base_url: str, req: Request, phase: str) -> None:
    """One request before the load: the phase must do what it claims (2xx, right content)."""
    r = httpx.request(req.method, base_url + req.path, content=req.body or None,
                      headers={**dict(req.headers), "Content-Type": req.content_type},
                      timeout=30)
    if r.status_code // 100 != 2:
        raise RuntimeError(f"{phase}: {req.method} {req.path} → {r.status_code} {r.text[:300]}")
    if phase.startswith("pull") and not ("receipt" in r.json() and r.json()["credentials"]):
        raise RuntimeError(f"pull answered without credentials or receipt: {r.text[:300]}")
    if phase == "pull-federation" and len(r.json().get("receipts", {})) != 2:
        raise RuntimeError(f"a cross-province pull must carry two receipts: {r.text[:300]}")
    if phase == "verify" and r.json().get("valid") is not True:
        raise RuntimeError(f"verify says the seeded credential is invalid: {r.text[:300]}")
