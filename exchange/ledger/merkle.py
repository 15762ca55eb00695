"""RFC 6962 / RFC 9162 §2.1 Merkle tree hashes, proof generation and proof verification.

Leaf hash ``SHA-256(0x00 || d)``, node hash ``SHA-256(0x01 || l || r)``, empty tree
``SHA-256("")`` (RFC 9162 §2.1.1). Proofs are generated from a :class:`HashSource` that
only answers for *complete* perfect subtrees: a tree of any size is the right-to-left fold
of the perfect subtrees of its size's binary decomposition, so every root and proof costs
O(log n) reads. Verifiers follow RFC 9162 §2.1.3.2 / §2.1.4.2, require 32-byte hashes,
always reject consistency from size 0, raise :class:`VerificationFailed` and return ``None``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator, Sequence
from hashlib import sha256
from typing import Final, Protocol, cast

from exchange.errors import InvalidInput, VerificationFailed

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = sha256(b"").digest()
"""MTH({}) = SHA-256() — the root of the empty tree (RFC 9162 §2.1.1)."""

_LEAF: Final = b"\x00"
_NODE: Final = b"\x01"
_END: Final = object()  # end-of-input marker for RootBuilder.extend


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 §2.1.1)."""
    return sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node (RFC 9162 §2.1.1)."""
    return sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """k, the largest power of two smaller than ``n`` (n > 1), as in RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_input_hash(value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidInput(f"hash is {len(value)} bytes, not 32", code="bad-hash-length")


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) by the recursive definition of RFC 9162 §2.1.1 (a reference, O(n) memory)."""
    for h in hashes:
        _check_input_hash(h)

    def mth(start: int, n: int) -> bytes:
        if n == 1:
            return hashes[start]
        k = _split(n)
        return node_hash(mth(start, k), mth(start + k, n - k))

    return mth(0, len(hashes)) if hashes else EMPTY_ROOT


class HashSource(Protocol):
    """Where proofs read hashes from: the roots of complete perfect subtrees.

    ``subtree(level, index)`` is the hash of the perfect subtree over leaves
    ``[index * 2**level, (index + 1) * 2**level)``; callers only ask for subtrees whose
    leaves all exist. Which subtrees a function here asks for depends only on its size and
    index arguments, never on the hashes returned, so a caller may record the requests on a
    dry run and fetch them in one batch. Subclass explicitly to inherit :meth:`leaf`.
    """

    __slots__ = ()

    def subtree(self, level: int, index: int) -> bytes:
        """The root of the perfect subtree ``index`` at height ``level``."""
        ...

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index`` (= ``subtree(0, index)``)."""
        return self.subtree(0, index)


def _decomposition(start: int, n: int, src: HashSource) -> list[bytes]:
    """The perfect subtrees of the binary decomposition of [start, start + n), largest first.

    ``start`` must be a multiple of the largest power of two in ``n``, as every range RFC
    9162 §2.1.1 produces is; then each piece is an aligned, complete perfect subtree.
    """
    parts: list[bytes] = []
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            parts.append(src.subtree(level, start >> level))
            start += 1 << level
    return parts


def _fold(parts: list[bytes]) -> bytes:
    """Fold perfect subtree roots (largest first) right to left into one root."""
    acc = parts[-1]
    for h in reversed(parts[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_root(start: int, end: int, src: HashSource) -> bytes:
    return _fold(_decomposition(start, end - start, src))  # MTH(D[start:end])


def root_at(size: int, src: HashSource) -> bytes:
    """MTH(D[0:size]) from at most log2(size)+1 perfect subtrees."""
    if size < 0:
        raise InvalidInput(f"tree size {size} is negative", code="bad-tree-size")
    return _range_root(0, size, src) if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, src: HashSource) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, ordered from the leaf's sibling upwards."""
    if not 0 <= index < size:
        raise InvalidInput(f"index {index} not in tree size {size}", code="index-out-of-range")
    siblings: list[bytes] = []  # collected root-first, returned leaf-first
    start, n = 0, size
    while n > 1:
        k = _split(n)
        if index < start + k:
            # PATH(m, D[0:k]) : MTH(D[k:n]); only the first left turn meets a ragged range.
            siblings.append(_range_root(start + k, start + n, src))
            n = k
        else:
            # PATH(m - k, D[k:n]) : MTH(D[0:k]); D[0:k] is a perfect, aligned subtree.
            siblings.append(src.subtree(k.bit_length() - 1, start // k))
            start, n = start + k, n - k
    siblings.reverse()
    return siblings


def consistency_proof(size1: int, size2: int, src: HashSource) -> list[bytes]:
    """PROOF(size1, D[0:size2]) = SUBPROOF(size1, D[0:size2], true) of RFC 9162 §2.1.4.1."""
    if not 0 < size1 <= size2:
        raise InvalidInput(f"no proof from size {size1} to {size2}", code="bad-tree-size")
    nodes: list[bytes] = []  # collected root-first, returned leaf-first
    start, m, n, whole = 0, size1, size2, True
    while m != n:
        k = _split(n)
        if m <= k:
            # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            nodes.append(_range_root(start + k, start + n, src))
            n = k
        else:
            # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            nodes.append(src.subtree(k.bit_length() - 1, start // k))
            start, m, n, whole = start + k, m - k, n - k, False
    if not whole:
        # SUBPROOF(m, D[m], false) = {MTH(D[m])}; reached only inside a perfect subtree.
        nodes.append(_range_root(start, start + n, src))
    nodes.reverse()
    return nodes


class MemoryTree(HashSource):
    """An in-memory tree that keeps every complete perfect subtree, level by level."""

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> None:
        """Add a leaf hash and every perfect subtree it completes."""
        _check_input_hash(leaf_hash)
        levels, level, h = self._levels, 0, leaf_hash
        while True:
            row = levels[level]
            row.append(h)
            if len(row) & 1:
                return
            h = node_hash(row[-2], h)
            level += 1
            if level == len(levels):
                levels.append([])

    def subtree(self, level: int, index: int) -> bytes:
        """The root of a complete perfect subtree; anything else is refused."""
        levels = self._levels
        if not (0 <= level < len(levels) and 0 <= index < len(levels[level])):
            raise InvalidInput(f"no subtree ({level}, {index})", code="subtree-unavailable")
        return levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        return root_at(self.size if size is None else size, self)


class RootBuilder:
    """A streaming root computer: the compact range [0, size) as a stack of perfect subtrees.

    Memory is O(log n); each append costs one hashlib call per subtree it completes
    (amortised one), which is what an auditor replaying a whole ledger needs.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []  # roots of the binary decomposition, largest first

    @classmethod
    def from_source(cls, size: int, src: HashSource) -> RootBuilder:
        """Resume at ``size`` from the perfect subtrees of its binary decomposition."""
        if size < 0:
            raise InvalidInput(f"tree size {size} is negative", code="bad-tree-size")
        builder = cls()
        builder._stack = _decomposition(0, size, src)
        builder._size = size
        return builder

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """The perfect subtree roots covering [0, size), largest first."""
        return tuple(self._stack)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash."""
        if len(leaf_hash) != HASH_SIZE:
            _check_input_hash(leaf_hash)
        n, stack = self._size, self._stack
        while n & 1:  # each trailing one bit is a perfect subtree this leaf completes
            leaf_hash = sha256(_NODE + stack.pop() + leaf_hash).digest()
            n >>= 1
        stack.append(leaf_hash)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add many leaf hashes: the same as repeated :meth:`append`, with less overhead.

        Leaves are taken in pairs, so the loop runs once per two leaves. If a hash has the
        wrong length, the leaves before its pair stay appended and the error is raised.
        """
        it, take = iter(leaf_hashes), next
        if self._size & 1:  # pair up from an even position
            first = cast(bytes, take(it, _END))
            if first is _END:
                return
            self.append(first)
        stack, node, digest = self._stack, _NODE, sha256
        pop, push = stack.pop, stack.append
        pairs, tail = self._size >> 1, _END
        try:
            for left in it:
                right = cast(bytes, take(it, _END))
                if right is _END:
                    tail = left
                    break
                if len(left) != HASH_SIZE or len(right) != HASH_SIZE:
                    _check_input_hash(left)
                    _check_input_hash(right)
                h, m = digest(node + left + right).digest(), pairs
                while m & 1:  # each trailing one bit of the pair count completes a subtree
                    h = digest(node + pop() + h).digest()
                    m >>= 1
                push(h)
                pairs += 1
        finally:
            self._size = 2 * pairs
        if tail is not _END:
            self.append(cast(bytes, tail))

    def root(self) -> bytes:
        """MTH(D[0:size]): the stack folded right to left."""
        return _fold(self._stack) if self._stack else EMPTY_ROOT


def _check_hashes(proof: Sequence[bytes], **named: bytes) -> None:
    is_hash = HASH_SIZE.__eq__
    if all(map(is_hash, map(len, named.values()))) and all(map(is_hash, map(len, proof))):
        return  # the usual case, without naming every element
    named.update((f"proof[{i}]", p) for i, p in enumerate(proof))
    for what, value in named.items():
        if len(value) != HASH_SIZE:
            raise VerificationFailed(f"{what} is not 32 bytes", code="bad-hash-length")


def _walk(fn: int, sn: int, path: Sequence[bytes], code: str) -> Iterator[tuple[bool, bytes]]:
    """The loop shared by RFC 9162 §2.1.3.2 step 4 and §2.1.4.2 step 6.

    ``fn`` is the node's position and ``sn`` the last position at its level. Yields
    ``(is_left_sibling, hash)`` per path element, and raises unless the path ends exactly
    at the root (``sn`` reaching 0 neither early nor late).
    """
    for p in path:
        if sn == 0:
            raise VerificationFailed("proof is too long", code=code)
        if fn & 1 or fn == sn:
            yield True, p
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            yield False, p
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationFailed("proof is too short", code=code)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2. Raises :class:`VerificationFailed`; returns ``None`` on success.
    """
    fail = "inclusion-proof-invalid"
    # 1. Every hash is a SHA-256 digest; a short "root" must not compare equal by accident.
    _check_hashes(proof, leaf_hash=leaf_hash, root=root)
    # 2. The leaf is inside the tree.
    if not 0 <= index < size:
        raise VerificationFailed(f"index {index} not in size {size}", code="index-out-of-range")
    # 3. Hash up from the leaf along the path, which must end exactly at the top (the loop
    #    of _walk, written out: every served proof is checked here before it leaves).
    r, fn, sn, digest, node = leaf_hash, index, size - 1, sha256, _NODE
    for p in proof:
        if sn == 0:
            raise VerificationFailed("proof is too long", code=fail)
        if fn & 1 or fn == sn:
            r = digest(node + p + r).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = digest(node + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationFailed("proof is too short", code=fail)
    # 4. The root is the one claimed.
    if not hmac.compare_digest(r, root):
        raise VerificationFailed("inclusion proof does not lead to the root", code=fail)


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (size2, root2) extends the tree (size1, root1).

    RFC 9162 §2.1.4.2. ``size1 == 0`` is always rejected. Raises
    :class:`VerificationFailed`; returns ``None`` on success.
    """
    fail = "consistency-proof-invalid"
    # 1. Every hash is a SHA-256 digest.
    _check_hashes(proof, root1=root1, root2=root2)
    # 2. 0 < size1 <= size2.
    if not 0 < size1 <= size2:
        raise VerificationFailed(f"no proof from size {size1} to {size2}", code="bad-tree-size")
    # 3. Equal sizes: the proof is empty and the roots are the same.
    if size1 == size2:
        if proof or not hmac.compare_digest(root1, root2):
            raise VerificationFailed("equal sizes need equal roots and an empty proof", code=fail)
        return
    if not proof:
        raise VerificationFailed("consistency proof is empty", code=fail)
    # 4. If size1 is a power of two, its root is the first node of the path.
    path = [root1, *proof] if size1 & (size1 - 1) == 0 else proof
    # 5. Skip the levels where the old tree's last node is a right child.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 6. Rebuild both roots: fr from the nodes left of the old edge, sr from all of them.
    fr = sr = path[0]
    for left, c in _walk(fn, sn, path[1:], fail):
        if left:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    # 7. Both rebuilt roots are the ones claimed.
    if not hmac.compare_digest(fr, root1):
        raise VerificationFailed("consistency proof does not lead to the old root", code=fail)
    if not hmac.compare_digest(sr, root2):
        raise VerificationFailed("consistency proof does not lead to the new root", code=fail)
