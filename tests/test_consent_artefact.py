"""A consent artefact is trusted only as its home node signed it."""

from __future__ import annotations

import base64
import json

import pytest

from exchange.crypto.jws import SigningKey, sign_jwt
from exchange.errors import VerificationFailed
from exchange.federation.consent import verify_artefact
from tests.test_pull_http import World


@pytest.fixture
def artefact(http, node) -> str:  # type: ignore[no-untyped-def]
    return str(World(http, node).grant()["artefact"])


def test_genuine_artefact_verifies(node, artefact: str) -> None:  # type: ignore[no-untyped-def]
    v = verify_artefact(node, artefact, node.settings.node)
    assert v.terms.max_uses == 5 and v.status_uri.startswith(node.base_url)


def test_tampered_artefact_is_refused(node, artefact: str) -> None:  # type: ignore[no-untyped-def]
    h, p, s = artefact.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    claims["max_uses"] = 1000
    forged_p = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(VerificationFailed) as e:
        verify_artefact(node, f"{h}.{forged_p}.{s}", node.settings.node)
    assert e.value.code == "bad-signature"


def test_foreign_artefact_is_refused(node, artefact: str) -> None:  # type: ignore[no-untyped-def]
    claims = json.loads(base64.urlsafe_b64decode(artefact.split(".")[1] + "=="))
    foreign = sign_jwt(claims, SigningKey.generate(), typ="consent+jwt")
    with pytest.raises(VerificationFailed) as e:
        verify_artefact(node, foreign, node.settings.node)
    assert e.value.code == "unknown-key"
    wrong_typ = sign_jwt(claims, SigningKey.generate(), typ="JWT")
    with pytest.raises(VerificationFailed):
        verify_artefact(node, wrong_typ, node.settings.node)
