"""Test helpers that act as a real client would: own keys, signed assertions, tokens."""

from __future__ import annotations

import os
import random
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from exchange.clients.agencies import register_agency
from exchange.clients.service import register_client
from exchange.clients.tools import (
    client_assertion,
    generate_client_jwk,
    signing_key_from_private_jwk,
)
from exchange.crypto.jws import SigningKey
from exchange.identifiers import generate_resident_id, generate_uscc
from exchange.node import Node

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class TestClientIdentity:
    client_id: str
    key: SigningKey
    public_jwk: dict[str, str]


def new_uscc(seed: object = None, region: str = "310000") -> str:
    return generate_uscc(random.Random(seed), region=region)


def new_resident_id(seed: object = None) -> str:
    return generate_resident_id(random.Random(seed), region="310105")


def add_agency(
    node: Node, types: list[str], *, uscc: str | None = None, name: str = "上海市市场监督管理局"
) -> TestClientIdentity:
    private, public = generate_client_jwk()
    uscc = uscc or new_uscc()
    with node.sessions.begin() as s:
        register_agency(s, node, uscc=uscc, name=name, types=types, jwk=public)
    return TestClientIdentity(uscc, signing_key_from_private_jwk(private), public)


def add_client(
    node: Node, client_id: str, kind: str, items: tuple[str, ...] = ()
) -> TestClientIdentity:
    private, public = generate_client_jwk()
    with node.sessions.begin() as s:
        register_client(
            s,
            client_id=client_id,
            name=client_id,
            kind=kind,
            jwk=public,
            items=items,
            now=node.clock.now(),
        )
    return TestClientIdentity(client_id, signing_key_from_private_jwk(private), public)


def token_form(
    node: Node, who: TestClientIdentity, assertion: str | None = None, **extra: str
) -> dict[str, str]:
    a = assertion or client_assertion(
        who.key,
        client_id=who.client_id,
        token_url=f"{node.base_url}/oauth2/token",
        now=node.clock.now(),
    )
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": a,
        **extra,
    }


def access_token(http: TestClient, node: Node, who: TestClientIdentity) -> str:
    r = http.post("/oauth2/token", data=token_form(node, who))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BUSINESS_LICENSE: dict[str, Any] = {
    "name": "上海示范科技有限公司",
    "legal_representative": "张三",
    "registered_capital": "人民币1000万元",
    "address": "上海市徐汇区漕溪北路88号",
    "business_scope": "技术开发、技术咨询、技术服务",
    "established_on": "2015-06-01",
}


@dataclass
class IdentityProviderForTests:
    """A real identity provider as the node sees one: an issuer URL and an Ed25519 key."""

    issuer: str
    key: SigningKey

    def token(self, node: Node, subject_id: str, ttl: int = 600, **over: Any) -> str:
        from exchange.crypto.jws import sign_jwt

        now = int(node.clock.now())
        claims = {"iss": self.issuer, "sub": subject_id, "aud": node.base_url, "iat": now,
                  "exp": now + ttl, **over}
        return sign_jwt(claims, self.key, typ="JWT")


def add_idp(node: Node, issuer: str = "https://idp.gov.test") -> IdentityProviderForTests:
    from exchange.subjects.service import add_identity_provider

    key = SigningKey.generate()
    with node.sessions.begin() as s:
        add_identity_provider(s, issuer=issuer, jwks={"keys": [key.public_jwk()]},
                              now=node.clock.now())
    return IdentityProviderForTests(issuer, key)


def assert_built_where_it_can_be(module: object, env: str, what: str) -> None:
    """An optional C module (setup.py) must be built wherever a C compiler, the Python
    headers and OpenSSL's are: a build that failed silently (it is marked optional) would
    leave ``what`` slower. Skipped where the environment variable ``env`` is 0."""
    if os.environ.get(env) == "0":
        pytest.skip(f"{env}=0: the Python code was asked for")
    include = Path(sysconfig.get_paths()["include"])
    can_build = (
        shutil.which("cc") is not None
        and (include / "Python.h").exists()
        and Path("/usr/include/openssl/sha.h").exists()
    )
    if not can_build:
        pytest.skip("no C compiler, Python headers or OpenSSL headers here")
    assert module is not None, f"{what} was not built: pip install -e . and read why"
