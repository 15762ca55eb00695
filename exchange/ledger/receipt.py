"""Ledger receipts in the C2SP tlog-proof format (https://c2sp.org/tlog-proof, v1).

Format, as specified in C2SP/C2SP ``tlog-proof.md`` ("Format")::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque data>      (optional line; not authenticated)
    index <decimal, no leading zeros>
    <base64 hash>                   (zero or more: the RFC 6962 audit path, leaf side first)

    <the signed checkpoint note, verbatim>

A receipt proves, offline and against the log's verifier key only, that a ledger entry
is leaf ``index`` of the tree the checkpoint commits to.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from exchange.errors import InvalidInput, VerificationFailed
from exchange.ledger.checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint, parse_checkpoint
from exchange.ledger.merkle import HASH_SIZE, verify_inclusion
from exchange.ledger.merkle import leaf_hash as hash_leaf
from exchange.ledger.note import MAX_NOTE_BYTES, Verifier, parse_unverified_note

HEADER: Final = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES: Final = 64
"""An audit path in a tree of at most 2**64 leaves has at most 64 hashes."""

MAX_RECEIPT_BYTES: Final = MAX_NOTE_BYTES + 8192
"""A receipt is a note plus at most 66 short header lines."""

_INDEX = re.compile(r"index (0|[1-9][0-9]*)", re.ASCII)
_EXTRA = "extra "


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt whose checkpoint signature and inclusion proof both verified."""

    index: int
    checkpoint: Checkpoint
    leaf_hash: bytes
    unverified_extra: bytes | None = None
    """The optional ``extra`` data: carried by the receipt, authenticated by nothing."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    """Canonical standard base64 (RFC 4648 §4) or ``ValueError``."""
    raw = base64.b64decode(text, validate=True)
    if _b64(raw) != text:
        raise ValueError("non-canonical base64")
    return raw


def make_receipt(
    index: int, proof: Sequence[bytes], checkpoint_note: str, *, extra: bytes | None = None
) -> str:
    """Build a ``tlog-proof@v1`` receipt for leaf ``index`` of the checkpointed tree.

    ``proof`` is the RFC 6962 audit path for ``index`` in the tree of the checkpoint's
    size; ``checkpoint_note`` is the signed checkpoint, included verbatim.
    """
    if not 0 <= index <= MAX_TREE_SIZE:
        raise InvalidInput(f"bad leaf index {index}", code="index-out-of-range")
    if len(proof) > MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in proof):
        raise InvalidInput("an audit path is at most 64 hashes of 32 bytes", code="bad-hash-length")
    # A receipt that cannot verify is a bug at the source; catch the obvious ones here.
    try:
        checkpoint = parse_checkpoint(parse_unverified_note(checkpoint_note).text)
    except VerificationFailed as e:
        raise InvalidInput(f"not a checkpoint note: {e.detail}", code="bad-checkpoint") from e
    if index >= checkpoint.size:
        raise InvalidInput(
            f"index {index} is not in the checkpoint's tree of size {checkpoint.size}",
            code="index-out-of-range",
        )
    lines = [HEADER]
    if extra is not None:
        lines.append(_EXTRA + _b64(extra))
    lines.append(f"index {index}")
    lines.extend(_b64(h) for h in proof)
    return "".join(f"{line}\n" for line in lines) + "\n" + checkpoint_note


def _malformed(detail: str) -> VerificationFailed:
    return VerificationFailed(f"malformed receipt: {detail}", code="receipt-malformed")


@dataclass(frozen=True, slots=True)
class _UnverifiedReceipt:
    index: int
    proof: list[bytes]
    checkpoint_note: str
    extra: bytes | None


def _parse(receipt: str | bytes) -> _UnverifiedReceipt:
    """Split a receipt into its parts (tlog-proof "Format") without verifying anything."""
    if len(receipt) > MAX_RECEIPT_BYTES:
        raise _malformed("too large")
    if isinstance(receipt, bytes):
        try:
            receipt = receipt.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _malformed("not valid UTF-8") from e
    head, sep, note = receipt.partition("\n\n")
    if not sep:
        raise _malformed("no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != HEADER:
        raise _malformed(f"first line is not {HEADER}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith(_EXTRA):
        try:
            extra = _unb64(rest.pop(0)[len(_EXTRA) :])
        except ValueError as e:
            raise _malformed("extra data is not base64") from e
    match = _INDEX.fullmatch(rest.pop(0)) if rest else None
    if match is None or int(match[1]) > MAX_TREE_SIZE:
        raise _malformed("no valid index line")
    if len(rest) > MAX_PROOF_HASHES:
        raise _malformed("audit path too long")
    try:
        proof = [_unb64(line) for line in rest]
    except ValueError as e:
        raise _malformed("audit path hash is not base64") from e
    return _UnverifiedReceipt(int(match[1]), proof, note, extra)


def verify_receipt(
    receipt: str | bytes,
    *,
    verifier: Verifier,
    leaf_bytes: bytes | None = None,
    leaf_hash: bytes | None = None,
    origin: str | None = None,
) -> VerifiedReceipt:
    """Verify a receipt for one ledger entry, given either its exact bytes or its leaf hash.

    Raises :class:`VerificationFailed` unless the checkpoint is signed by ``verifier`` (and
    has ``origin``, if given) and the entry is leaf ``index`` of that checkpoint's tree.
    """
    if leaf_bytes is not None and leaf_hash is None:
        expected_leaf = hash_leaf(leaf_bytes)
    elif leaf_hash is not None and leaf_bytes is None:
        expected_leaf = leaf_hash
    else:
        raise InvalidInput("give exactly one of leaf_bytes and leaf_hash", code="invalid-input")
    # 1. The receipt is well formed.
    parsed = _parse(receipt)
    # 2. The log's key signed the checkpoint, for the expected origin.
    checkpoint = open_checkpoint(parsed.checkpoint_note, verifier, origin)
    # 3. The entry is leaf `index` of the checkpointed tree (RFC 9162 §2.1.3.2).
    verify_inclusion(expected_leaf, parsed.index, checkpoint.size, parsed.proof, checkpoint.root)
    return VerifiedReceipt(parsed.index, checkpoint, expected_leaf, parsed.extra)
