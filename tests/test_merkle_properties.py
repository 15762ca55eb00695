"""Property tests for exchange.ledger.merkle against a naive RFC 9162 reference.

The reference below is written straight from the recursive definitions of RFC 9162
§2.1.1 (MTH), §2.1.3.1 (PATH) and §2.1.4.1 (PROOF / SUBPROOF), over plain lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.errors import InvalidInput, VerificationFailed
from exchange.ledger.merkle import (
    HashSource,
    MemoryTree,
    RootBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_at,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(b"entry %d" % i) for i in range(n)]


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def _flip(value: bytes, bit: int) -> bytes:
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


class CountingSource(HashSource):
    """Wraps a tree, records reads, and refuses subtrees not complete at ``limit`` leaves."""

    def __init__(self, tree: MemoryTree, limit: int) -> None:
        self.tree, self.limit, self.reads = tree, limit, 0

    def subtree(self, level: int, index: int) -> bytes:
        assert (index + 1) << level <= self.limit, "asked for an incomplete subtree"
        self.reads += 1
        return self.tree.subtree(level, index)


sizes = st.integers(min_value=1, max_value=300)


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return n, draw(st.integers(0, n - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return draw(st.integers(1, n)), n


@given(tree_and_index(), st.data())
def test_inclusion_proofs_verify_and_any_bit_flip_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    n, index = case
    leaves = _leaves(n)
    tree = MemoryTree(leaves)
    proof = inclusion_proof(index, n, tree)
    root = tree.root()
    verify_inclusion(leaves[index], index, n, proof, root)
    # Flip one bit of the leaf hash, the root or one proof hash.
    target = data.draw(st.integers(0, len(proof) + 1), label="target")
    bit = data.draw(st.integers(0, 255), label="bit")
    leaf, bad_root, bad_proof = leaves[index], root, list(proof)
    if target == 0:
        leaf = _flip(leaf, bit)
    elif target == 1:
        bad_root = _flip(root, bit)
    else:
        bad_proof[target - 2] = _flip(proof[target - 2], bit)
    with pytest.raises(VerificationFailed):
        verify_inclusion(leaf, index, n, bad_proof, bad_root)


@given(two_sizes(), st.data())
def test_consistency_proofs_verify_and_any_bit_flip_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    m, n = case
    tree = MemoryTree(_leaves(n))
    proof = consistency_proof(m, n, tree)
    root1, root2 = tree.root(m), tree.root(n)
    verify_consistency(m, n, root1, root2, proof)
    target = data.draw(st.integers(0, len(proof) + 1), label="target")
    bit = data.draw(st.integers(0, 255), label="bit")
    r1, r2, bad_proof = root1, root2, list(proof)
    if target == 0:
        r1 = _flip(r1, bit)
    elif target == 1:
        r2 = _flip(r2, bit)
    else:
        bad_proof[target - 2] = _flip(proof[target - 2], bit)
    with pytest.raises(VerificationFailed):
        verify_consistency(m, n, r1, r2, bad_proof)


def test_every_bit_flip_fails_exhaustively_for_a_small_tree() -> None:
    n = 13
    leaves = _leaves(n)
    tree = MemoryTree(leaves)
    root = tree.root()
    for index in range(n):
        proof = inclusion_proof(index, n, tree)
        for bit in range(256):
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = _flip(bad[i], bit)
                with pytest.raises(VerificationFailed):
                    verify_inclusion(leaves[index], index, n, bad, root)
            with pytest.raises(VerificationFailed):
                verify_inclusion(_flip(leaves[index], bit), index, n, proof, root)
            with pytest.raises(VerificationFailed):
                verify_inclusion(leaves[index], index, n, proof, _flip(root, bit))


@given(tree_and_index())
def test_wrong_index_or_path_length_fails(case: tuple[int, int]) -> None:
    # Not tested: the same (proof, root) under a different tree size. An RFC 9162 verifier
    # can accept e.g. index 0 of size 3 as index 0 of size 4, because the root does not
    # encode the size; the checkpoint binds size and root together, so that is no forgery.
    n, index = case
    leaves = _leaves(n)
    tree = MemoryTree(leaves)
    proof, root = inclusion_proof(index, n, tree), tree.root()
    for i in (index - 1, index + 1):
        if i >= 0 and n > 1:
            with pytest.raises(VerificationFailed):
                verify_inclusion(leaves[index], i, n, proof, root)
    with pytest.raises(VerificationFailed):
        verify_inclusion(leaves[index], index, n, [*proof, root], root)
    if proof:
        with pytest.raises(VerificationFailed):
            verify_inclusion(leaves[index], index, n, proof[:-1], root)


@settings(max_examples=60)
@given(st.integers(1, 64), st.data())
def test_proofs_equal_the_naive_reference(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    tree = MemoryTree(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    m = data.draw(st.integers(1, n), label="m")
    assert inclusion_proof(index, n, tree) == ref_path(index, leaves)
    assert consistency_proof(m, n, tree) == ref_subproof(m, leaves, True)
    assert tree.root() == ref_mth(leaves) == root_from_leaf_hashes(leaves)


@pytest.mark.parametrize("n", range(1, 18))
def test_all_proofs_equal_the_naive_reference_for_small_trees(n: int) -> None:
    leaves = _leaves(n)
    tree = MemoryTree(leaves)
    for i in range(n):
        assert inclusion_proof(i, n, tree) == ref_path(i, leaves)
        assert root_at(i + 1, tree) == ref_mth(leaves[: i + 1])
    for m in range(1, n + 1):
        proof = consistency_proof(m, n, tree)
        assert proof == ref_subproof(m, leaves, True)
        verify_consistency(m, n, tree.root(m), tree.root(n), proof)


@given(tree_and_index(), st.integers(0, 300))
def test_historical_proofs_read_only_complete_subtrees_and_log_many(
    case: tuple[int, int], extra: int
) -> None:
    n, index = case
    big = MemoryTree(_leaves(n + extra))
    exact = MemoryTree(_leaves(n))
    bound = 2 * math.ceil(math.log2(n)) + 2 if n > 1 else 1
    src = CountingSource(big, n)
    assert inclusion_proof(index, n, src) == inclusion_proof(index, n, exact)
    assert src.reads <= bound
    m = index + 1
    src = CountingSource(big, n)
    assert consistency_proof(m, n, src) == consistency_proof(m, n, exact)
    assert src.reads <= bound
    src = CountingSource(big, n)
    assert root_at(n, src) == exact.root()
    assert src.reads == bin(n).count("1")


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=300), st.data())
def test_root_builder_matches_memory_tree_at_every_size(
    hashes: list[bytes], data: st.DataObject
) -> None:
    builder, tree = RootBuilder(), MemoryTree()
    for h in hashes:
        assert builder.root() == tree.root()
        builder.append(h)
        tree.append(h)
    assert builder.root() == tree.root() == root_from_leaf_hashes(hashes)
    cut = data.draw(st.integers(0, len(hashes)), label="cut")
    resumed = RootBuilder.from_source(cut, tree)
    resumed.extend(hashes[cut:])
    assert resumed.root() == builder.root()
    assert resumed.size == builder.size == len(hashes)
    assert resumed.frontier == builder.frontier
    assert len(builder.frontier) == bin(len(hashes)).count("1")


def test_bad_arguments_are_rejected() -> None:
    tree = MemoryTree(_leaves(5))
    with pytest.raises(InvalidInput):
        inclusion_proof(5, 5, tree)
    with pytest.raises(InvalidInput):
        inclusion_proof(-1, 5, tree)
    with pytest.raises(InvalidInput):
        consistency_proof(0, 5, tree)
    with pytest.raises(InvalidInput):
        consistency_proof(4, 3, tree)
    assert consistency_proof(5, 5, tree) == []
    with pytest.raises(InvalidInput):
        tree.subtree(1, 2)  # leaves 4..5 are not complete: only 5 leaves exist
    with pytest.raises(InvalidInput):
        tree.append(b"short")
    with pytest.raises(InvalidInput):
        RootBuilder().append(b"\x00" * 31)
    with pytest.raises(InvalidInput):
        root_from_leaf_hashes([b"\x00" * 33])


def test_verifier_error_codes() -> None:
    leaves = _leaves(6)
    tree = MemoryTree(leaves)
    root, proof = tree.root(), inclusion_proof(2, 6, tree)
    cases: list[tuple[Callable[[], None], str]] = [
        (lambda: verify_inclusion(leaves[2][:31], 2, 6, proof, root), "bad-hash-length"),
        (lambda: verify_inclusion(leaves[2], 2, 6, [*proof[:-1], b""], root), "bad-hash-length"),
        (lambda: verify_inclusion(leaves[2], 6, 6, proof, root), "index-out-of-range"),
        (lambda: verify_inclusion(leaves[2], -1, 6, proof, root), "index-out-of-range"),
        (lambda: verify_inclusion(leaves[3], 2, 6, proof, root), "inclusion-proof-invalid"),
        (lambda: verify_consistency(0, 6, root, root, [root]), "bad-tree-size"),
        (lambda: verify_consistency(0, 0, root, root, []), "bad-tree-size"),
        (lambda: verify_consistency(6, 5, root, root, []), "bad-tree-size"),
        (lambda: verify_consistency(3, 6, root, root, []), "consistency-proof-invalid"),
        (lambda: verify_consistency(6, 6, root, root, [root]), "consistency-proof-invalid"),
        (lambda: verify_consistency(6, 6, root, leaves[0], []), "consistency-proof-invalid"),
    ]
    for call, code in cases:
        with pytest.raises(VerificationFailed) as e:
            call()
        assert e.value.code == code
    verify_consistency(6, 6, root, root, [])


@given(st.integers(0, 40), st.integers(0, 40))
def test_extend_with_a_bad_hash_keeps_a_consistent_prefix(start: int, bad_at: int) -> None:
    hashes = _leaves(start + 41)
    builder = RootBuilder()
    builder.extend(hashes[:start])
    batch = [*hashes[start : start + bad_at], b"short", *hashes[start + bad_at :]]
    with pytest.raises(InvalidInput):
        builder.extend(batch)
    kept = builder.size
    assert start + bad_at - 1 <= kept <= start + bad_at
    assert builder.root() == MemoryTree(hashes[:kept]).root()


def test_regression_extend_with_nothing_on_an_odd_size_keeps_the_size() -> None:
    # Found by test_root_builder_matches_memory_tree_at_every_size: extend([]) on a builder
    # of odd size used to reset its size to the even number below.
    builder = RootBuilder()
    builder.extend(_leaves(3))
    root = builder.root()
    builder.extend([])
    assert builder.size == 3
    assert builder.root() == root
