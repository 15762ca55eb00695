"""Proofs served from the stored tree (the database) equal the in-memory reference and verify;
any flipped bit is rejected. Runs on SQLite and PostgreSQL like the rest."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.ledger import merkle, proofs, store
from exchange.ledger.leaf import Event
from exchange.ledger.service import commit_wait, log_event

N = 67  # not a power of two, several levels deep


@pytest.fixture
def filled(node):  # type: ignore[no-untyped-def]
    node.start_ledger()
    for i in range(N):
        with node.sessions.begin() as s:
            log_event(s, node, Event(kind="pull", actor="prop", outcome="granted",
                                     request_sha256=hashlib.sha256(str(i).encode()).hexdigest()))
        commit_wait(node, s)
    with node.engine.connect() as conn:
        leaves = [merkle.leaf_hash(e.leaf) for e in store.entries(conn, 0, N)]
    return node, merkle.MemoryTree(leaves)


def _flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_stored_proofs_match_and_verify(filled, data) -> None:  # type: ignore[no-untyped-def]
    node, tree = filled
    n = data.draw(st.integers(1, N))
    m = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, n - 1))
    bit = data.draw(st.integers(0, 255))
    with node.engine.connect() as conn:
        inc = proofs.inclusion(conn, index, n)
        con = proofs.consistency(conn, m, n)
    assert inc == merkle.inclusion_proof(index, n, tree)
    assert con == merkle.consistency_proof(m, n, tree)
    root_n, root_m, leaf = tree.root(n), tree.root(m), tree.leaf(index)
    merkle.verify_inclusion(leaf, index, n, inc, root_n)
    merkle.verify_consistency(m, n, root_m, root_n, con)
    from exchange.errors import VerificationFailed

    with pytest.raises(VerificationFailed):
        merkle.verify_inclusion(_flip(leaf, bit), index, n, inc, root_n)
    with pytest.raises(VerificationFailed):
        merkle.verify_inclusion(leaf, index, n, inc, _flip(root_n, bit))
    if inc:
        k = data.draw(st.integers(0, len(inc) - 1))
        with pytest.raises(VerificationFailed):
            merkle.verify_inclusion(leaf, index, n, [*inc[:k], _flip(inc[k], bit), *inc[k + 1:]],
                                    root_n)
    if con:
        k = data.draw(st.integers(0, len(con) - 1))
        with pytest.raises(VerificationFailed):
            merkle.verify_consistency(m, n, root_m, root_n,
                                      [*con[:k], _flip(con[k], bit), *con[k + 1:]])
