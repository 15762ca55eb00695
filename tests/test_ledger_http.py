"""The ledger over HTTP: every issuance and status change is logged, checkpoints are signed,
proofs and receipts verify with our verifiers, and no leaf holds personal data."""

from __future__ import annotations

import base64
import json
from typing import Annotated

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient

from exchange.ledger import merkle
from exchange.ledger.checkpoint import open_checkpoint
from exchange.ledger.leaf import GENESIS_PREV, LEAF_FIELDS, pseudonym
from exchange.ledger.note import Verifier
from exchange.ledger.receipt import verify_receipt
from gateway import problems
from gateway.routers.ledger import MAX_INDEX
from tests.conftest import TEST_SUBJECT_KEY
from tests.helpers import BUSINESS_LICENSE, access_token, add_agency, add_client, bearer, new_uscc


@pytest.fixture
def world(http, node):  # type: ignore[no-untyped-def]
    agency = add_agency(node, ["business-license"])
    token = access_token(http, node, agency)
    auditor = add_client(node, "auditor-1", "auditor")
    audit_token = access_token(http, node, auditor)
    return agency, token, audit_token


def _issue(http, token, subject):  # type: ignore[no-untyped-def]
    r = http.post(
        "/v1/certificates",
        headers=bearer(token),
        json={"type": "business-license", "subject_id": subject, "claims": BUSINESS_LICENSE},
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _verifier(http) -> Verifier:  # type: ignore[no-untyped-def]
    r = http.get("/v1/ledger/vkey")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return Verifier.from_vkey(r.text.strip())


def test_issuance_and_status_are_logged_without_personal_data(http, node, world) -> None:  # type: ignore[no-untyped-def]
    agency, token, audit_token = world
    subject_a, subject_b = new_uscc("a"), new_uscc("b")
    ids = [_issue(http, token, subject_a), _issue(http, token, subject_b)]
    r = http.post(
        f"/v1/certificates/{ids[0]}/status",
        headers=bearer(token),
        json={"status": "revoked", "reason": "吊销"},
    )
    assert r.status_code == 200

    entries = http.get("/v1/ledger/entries?start=0&end=100", headers=bearer(audit_token))
    assert entries.status_code == 200, entries.text
    rows = entries.json()["entries"]
    assert [e["index"] for e in rows] == [0, 1, 2]
    leaves = [base64.b64decode(e["leaf"]) for e in rows]
    for raw in leaves:
        text = raw.decode()
        assert subject_a not in text and subject_b not in text
        assert "张三" not in text and BUSINESS_LICENSE["address"] not in text
        assert set(json.loads(raw)) == set(LEAF_FIELDS)
    fields = [json.loads(raw) for raw in leaves]
    key = base64.b64decode(TEST_SUBJECT_KEY)
    assert fields[0]["subject"] == pseudonym(key, subject_a)
    assert [f["kind"] for f in fields] == [
        "certificate.issued",
        "certificate.issued",
        "certificate.status",
    ]
    assert [f["certificate"] for f in fields] == [ids[0], ids[1], ids[0]]
    assert fields[0]["actor"] == agency.client_id
    # The hash chain and the subject back-pointers.
    assert fields[0]["prev"] == GENESIS_PREV
    for i in (1, 2):
        assert fields[i]["prev"] == merkle.leaf_hash(leaves[i - 1]).hex()
    assert [f["prev_subject"] for f in fields] == [None, None, 0]


def test_checkpoint_proofs_and_receipts_verify(http, node, world) -> None:  # type: ignore[no-untyped-def]
    _, token, _ = world
    verifier = _verifier(http)
    _issue(http, token, new_uscc())
    old = open_checkpoint(http.get("/v1/ledger/checkpoint").text, verifier)
    assert old.origin == "node31.certex.test/ledger" and old.size == 1
    for _ in range(6):
        _issue(http, token, new_uscc())
    note = http.get("/v1/ledger/checkpoint").text
    cp = open_checkpoint(note, verifier)
    assert cp.size == 7
    for index in range(cp.size):
        r = http.get(f"/v1/ledger/proof/inclusion?index={index}&size={cp.size}")
        assert r.status_code == 200
        proof = [base64.b64decode(h) for h in r.json()["proof"]]
        e = node.engine.connect()
        try:
            from exchange.ledger import merkle, store

            leaf = store.entries(e, index, index + 1)[0].leaf
        finally:
            e.close()
        merkle.verify_inclusion(merkle.leaf_hash(leaf), index, cp.size, proof, cp.root)
        receipt = http.get(f"/v1/ledger/receipts/{index}").text
        verified = verify_receipt(receipt, verifier=verifier, leaf_bytes=leaf)
        assert verified.index == index
    r = http.get(f"/v1/ledger/proof/consistency?first={old.size}&second={cp.size}")
    proof = [base64.b64decode(h) for h in r.json()["proof"]]
    merkle.verify_consistency(old.size, cp.size, old.root, cp.root, proof)


@pytest.mark.parametrize(
    "query",
    [
        "index=5&size=3",
        "index=-1&size=3",
        "index=0&size=999",
        "index=x&size=1",
    ],
)
def test_bad_proof_requests(http, world, query) -> None:  # type: ignore[no-untyped-def]
    _, token, _ = world
    for _ in range(3):
        _issue(http, token, new_uscc())
    r = http.get(f"/v1/ledger/proof/inclusion?{query}")
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")


def test_entries_need_auditor_scope(http, node, world) -> None:  # type: ignore[no-untyped-def]
    _, token, _ = world
    assert http.get("/v1/ledger/entries?start=0&end=10").status_code == 401
    assert http.get("/v1/ledger/entries?start=0&end=10", headers=bearer(token)).status_code == 403


@pytest.mark.parametrize("patch", [{"v": True}, {"v": 1.0}, {"time_ms": True}, {"node": 31},
                                   {"kind": None}, {"prev_subject": True}])
def test_decode_leaf_refuses_ill_typed_fields(patch) -> None:  # type: ignore[no-untyped-def]
    """Regression: bools passed as ints (True == 1) and non-string names were accepted."""
    from exchange.crypto.canonical import canonical_json
    from exchange.errors import LedgerIntegrityError
    from exchange.ledger.leaf import Event, decode_leaf, encode_leaf

    raw = encode_leaf(Event(kind="pull", actor="a", outcome="ok"), index=3, time_ms=5,
                      node="31", prev=b"\0" * 32, prev_subject=None)
    decode_leaf(raw)
    bad = canonical_json({**json.loads(raw), **patch})
    with pytest.raises(LedgerIntegrityError):
        decode_leaf(bad)


_QUERIES = [
    "", "index=", "index=x", "index=-1", "index=1.5", "index=99999999999999999999999",
    "index=1&size=0", "index=1&size=x", "index=1&size=", "size=3", "index=1&index=x&size=3",
    "index=x&index=1&size=3", "index=%201", "index=+1", "index=1_0", "index=%D9%A3", "index=0",
    "index=0&size=1", "index=2&size=4611686018427387905", "index=4611686018427387905",
    "index=true", "index=0x1", "index=1e2", "index=00", "index=0&size=-1", "index=0&size=1.0",
]


def _declared_reference() -> FastAPI:
    ref = FastAPI()
    problems.install(ref)

    @ref.get("/v1/ledger/proof/inclusion")
    async def declared(
        index: Annotated[int, Query(ge=0, le=MAX_INDEX)],
        size: Annotated[
            int | None, Query(ge=1, le=MAX_INDEX, description="default: latest checkpoint")
        ] = None,
    ) -> dict[str, int | None]:
        return {"index": index, "size": size}

    return ref


def test_inclusion_parameters_are_what_declaring_them_gave(http, world) -> None:  # type: ignore[no-untyped-def]
    """The route reads its two query parameters itself (speed); a reference route that
    declares them in its signature, under the same problem handlers, gives the same 400
    problems for every malformed query and the same OpenAPI parameters."""
    ref = _declared_reference()
    _, token, _ = world
    for _ in range(3):
        _issue(http, token, new_uscc())
    with TestClient(ref) as client:
        for query in _QUERIES:
            want = client.get(f"/v1/ledger/proof/inclusion?{query}")
            got = http.get(f"/v1/ledger/proof/inclusion?{query}")
            if want.status_code == 200:  # valid parameters: the node answers or refuses them
                assert got.status_code in (200, 400, 404), query
                if got.status_code == 200:
                    assert got.json()["index"] == want.json()["index"], query
                continue
            assert (got.status_code, got.json()) == (want.status_code, want.json()), query
            assert got.headers["content-type"] == want.headers["content-type"], query
        spec = client.get("/openapi.json").json()["paths"]["/v1/ledger/proof/inclusion"]
    ours = http.get("/openapi.json").json()["paths"]["/v1/ledger/proof/inclusion"]
    assert ours["get"]["parameters"] == spec["get"]["parameters"]
