"""Tests for exchange.ledger.checkpoint and exchange.ledger.receipt (C2SP tlog-proof@v1)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import InvalidInput, VerificationFailed
from exchange.ledger.checkpoint import (
    Checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from exchange.ledger.merkle import MemoryTree, inclusion_proof, leaf_hash
from exchange.ledger.note import Signer, open_note, sign_note
from exchange.ledger.receipt import HEADER, make_receipt, verify_receipt

ORIGIN = "node31.example/ledger"
ENTRIES = [b'{"index":%d,"kind":"pull"}' % i for i in range(11)]


def _signer(name: str = ORIGIN) -> Signer:
    return Signer(name, Ed25519PrivateKey.generate())


LOG = _signer()


def _tree(n: int = len(ENTRIES)) -> MemoryTree:
    return MemoryTree(leaf_hash(e) for e in ENTRIES[:n])


def _checkpoint_note(tree: MemoryTree, signer: Signer = LOG) -> str:
    return sign_checkpoint(Checkpoint(signer.name, tree.size, tree.root()), signer)


def _receipt(index: int, *, extra: bytes | None = None) -> str:
    tree = _tree()
    proof = inclusion_proof(index, tree.size, tree)
    return make_receipt(index, proof, _checkpoint_note(tree), extra=extra)


# --- checkpoints ---------------------------------------------------------------------


def test_checkpoint_round_trip() -> None:
    tree = _tree()
    note = _checkpoint_note(tree)
    checkpoint = open_checkpoint(note, LOG.verifier, ORIGIN)
    assert checkpoint == Checkpoint(ORIGIN, tree.size, tree.root())
    assert note.startswith(f"{ORIGIN}\n11\n{base64.b64encode(tree.root()).decode()}\n\n— ")


@given(
    st.text(st.characters(min_codepoint=0x20), min_size=1),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(st.text(st.characters(min_codepoint=0x20), min_size=1), max_size=3),
)
def test_checkpoint_text_round_trip(origin: str, size: int, root: bytes, ext: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(ext))
    assert parse_checkpoint(checkpoint.to_text()) == checkpoint


@pytest.mark.parametrize(
    "text",
    [
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # no final newline
        "o\n5\n",
        "\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n05\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n+5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n 5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n5_0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n\u0665\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # Arabic-Indic five
        "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n",  # 31 bytes
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",  # non-canonical
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",  # unpadded
        "o\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",  # empty extension line
        "o\r\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    ],
)
def test_strict_checkpoint_parsing(text: str) -> None:
    with pytest.raises(VerificationFailed) as e:
        parse_checkpoint(text)
    assert e.value.code == "checkpoint-malformed"


def test_checkpoint_construction_is_validated() -> None:
    bad_constructions: list[Callable[[], Checkpoint]] = [
        lambda: Checkpoint("", 1, bytes(32)),
        lambda: Checkpoint("a\nb", 1, bytes(32)),
        lambda: Checkpoint("o", -1, bytes(32)),
        lambda: Checkpoint("o", 2**64, bytes(32)),
        lambda: Checkpoint("o", True, bytes(32)),
        lambda: Checkpoint("o", 1, bytes(31)),
        lambda: Checkpoint("o", 1, bytes(32), ("",)),
    ]
    for bad in bad_constructions:
        with pytest.raises(InvalidInput):
            bad()


def test_sign_checkpoint_requires_the_origin_as_key_name() -> None:
    with pytest.raises(InvalidInput):
        sign_checkpoint(Checkpoint("other.example/ledger", 1, bytes(32)), LOG)


def test_open_checkpoint_checks_key_and_origin() -> None:
    note = _checkpoint_note(_tree())
    with pytest.raises(VerificationFailed) as e:
        open_checkpoint(note, LOG.verifier, "node32.example/ledger")
    assert e.value.code == "checkpoint-wrong-origin"
    with pytest.raises(VerificationFailed) as e:
        open_checkpoint(note, _signer().verifier)
    assert e.value.code == "note-unverified"
    # A note whose text is signed by the right key but is not a checkpoint.
    with pytest.raises(VerificationFailed) as e:
        open_checkpoint(sign_note("hello\n", [LOG]), LOG.verifier)
    assert e.value.code == "checkpoint-malformed"
    # A well-formed checkpoint for another origin, signed under our key's name.
    other = Checkpoint("node32.example/ledger", 1, bytes(32)).to_text()
    with pytest.raises(VerificationFailed) as e:
        open_checkpoint(sign_note(other, [LOG]), LOG.verifier)
    assert e.value.code == "checkpoint-wrong-origin"


# --- receipts ------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(ENTRIES)))
def test_receipt_round_trip(index: int) -> None:
    receipt = _receipt(index)
    assert receipt.startswith(f"{HEADER}\nindex {index}\n")
    verified = verify_receipt(
        receipt, verifier=LOG.verifier, leaf_bytes=ENTRIES[index], origin=ORIGIN
    )
    assert verified.index == index
    assert verified.checkpoint.size == len(ENTRIES)
    assert verified.leaf_hash == leaf_hash(ENTRIES[index])
    assert verified.unverified_extra is None
    again = verify_receipt(
        receipt.encode(), verifier=LOG.verifier, leaf_hash=leaf_hash(ENTRIES[index])
    )
    assert again == verified


def test_receipt_layout_follows_tlog_proof() -> None:
    tree = _tree()
    proof = inclusion_proof(3, tree.size, tree)
    note = _checkpoint_note(tree)
    receipt = make_receipt(3, proof, note, extra=b"context")
    expected_head = [
        HEADER,
        "extra Y29udGV4dA==",
        "index 3",
        *(base64.b64encode(h).decode() for h in proof),
    ]
    assert receipt == "\n".join(expected_head) + "\n\n" + note
    assert (
        verify_receipt(receipt, verifier=LOG.verifier, leaf_bytes=ENTRIES[3]).unverified_extra
        == b"context"
    )


def test_single_leaf_tree_has_an_empty_path() -> None:
    tree = _tree(1)
    receipt = make_receipt(0, [], _checkpoint_note(tree))
    assert receipt.startswith(f"{HEADER}\nindex 0\n\n{ORIGIN}\n1\n")
    verify_receipt(receipt, verifier=LOG.verifier, leaf_bytes=ENTRIES[0])


def _flip_line(receipt: str, line_no: int) -> str:
    lines = receipt.split("\n")
    raw = bytearray(base64.b64decode(lines[line_no]))
    raw[0] ^= 1
    lines[line_no] = base64.b64encode(bytes(raw)).decode()
    return "\n".join(lines)


TAMPERS: dict[str, tuple[Callable[[str], str], str]] = {
    "index+1": (lambda r: r.replace("index 5\n", "index 6\n"), "inclusion-proof-invalid"),
    "index-1": (lambda r: r.replace("index 5\n", "index 4\n"), "inclusion-proof-invalid"),
    "index beyond size": (lambda r: r.replace("index 5\n", "index 11\n"), "index-out-of-range"),
    "path hash": (lambda r: _flip_line(r, 2), "inclusion-proof-invalid"),
    "last path hash": (lambda r: _flip_line(r, 5), "inclusion-proof-invalid"),
    "path hash dropped": (
        lambda r: "\n".join(r.split("\n")[:2] + r.split("\n")[3:]),
        "inclusion-proof-invalid",
    ),
    "checkpoint size": (
        lambda r: r.replace(f"{ORIGIN}\n11\n", f"{ORIGIN}\n12\n"),
        "note-signature-invalid",
    ),
    "leading zero": (lambda r: r.replace("index 5\n", "index 05\n"), "receipt-malformed"),
    "header": (lambda r: r.replace(HEADER, "c2sp.org/tlog-proof@v2"), "receipt-malformed"),
    "no blank line": (lambda r: r.replace("\n\n", "\n", 1), "receipt-malformed"),
    "crlf": (lambda r: r.replace("\n", "\r\n", 2), "receipt-malformed"),
    "unpadded hash": (lambda r: r.replace("=\n", "\n", 1), "receipt-malformed"),
    "no index": (lambda r: r.replace("index 5\n", ""), "receipt-malformed"),
    "index -1": (lambda r: r.replace("index 5\n", "index -1\n"), "receipt-malformed"),
    "65 hashes": (
        lambda r: r.replace("index 5\n", "index 5\n" + ("A" * 43 + "=\n") * 65),
        "receipt-malformed",
    ),
}


@pytest.mark.parametrize("name", TAMPERS)
def test_tampered_receipts_fail(name: str) -> None:
    mutate, code = TAMPERS[name]
    receipt = _receipt(5)
    tampered = mutate(receipt)
    assert tampered != receipt
    with pytest.raises(VerificationFailed) as e:
        verify_receipt(tampered, verifier=LOG.verifier, leaf_bytes=ENTRIES[5])
    assert e.value.code == code


def test_receipt_for_another_entry_fails() -> None:
    with pytest.raises(VerificationFailed) as e:
        verify_receipt(_receipt(5), verifier=LOG.verifier, leaf_bytes=ENTRIES[6])
    assert e.value.code == "inclusion-proof-invalid"


def test_checkpoint_signed_by_another_key_fails() -> None:
    tree = _tree()
    impostor = _signer()  # same origin and key name, different key
    receipt = make_receipt(2, inclusion_proof(2, tree.size, tree), _checkpoint_note(tree, impostor))
    with pytest.raises(VerificationFailed) as e:
        verify_receipt(receipt, verifier=LOG.verifier, leaf_bytes=ENTRIES[2])
    assert e.value.code == "note-unverified"
    # The same receipt with the impostor's checkpoint plus a forged line under our key ID.
    forged = receipt + f"— {ORIGIN} {base64.b64encode(LOG.key_id + bytes(64)).decode()}\n"
    with pytest.raises(VerificationFailed) as e:
        verify_receipt(forged, verifier=LOG.verifier, leaf_bytes=ENTRIES[2])
    assert e.value.code == "note-signature-invalid"


def test_checkpoint_of_another_origin_fails() -> None:
    tree = _tree()
    other = _signer("node32.example/ledger")
    receipt = make_receipt(2, inclusion_proof(2, tree.size, tree), _checkpoint_note(tree, other))
    # Trusting the other log's key but expecting our origin.
    with pytest.raises(VerificationFailed) as e:
        verify_receipt(receipt, verifier=other.verifier, leaf_bytes=ENTRIES[2], origin=ORIGIN)
    assert e.value.code == "checkpoint-wrong-origin"
    # Trusting only our key.
    with pytest.raises(VerificationFailed):
        verify_receipt(receipt, verifier=LOG.verifier, leaf_bytes=ENTRIES[2])


def test_extra_is_not_authenticated() -> None:
    receipt = _receipt(4, extra=b"one")
    changed = receipt.replace("extra b25l\n", "extra dHdv\n")
    verified = verify_receipt(changed, verifier=LOG.verifier, leaf_bytes=ENTRIES[4])
    assert verified.unverified_extra == b"two"


def test_witness_cosignatures_are_carried_and_ignored() -> None:
    receipt = _receipt(1)
    witness = _signer("witness.example/w1")
    body = open_note(receipt.split("\n\n", 1)[1], [LOG.verifier]).text
    cosigned = receipt + witness.signature_line(body.encode())
    verify_receipt(cosigned, verifier=LOG.verifier, leaf_bytes=ENTRIES[1])


def test_make_receipt_rejects_inconsistent_input() -> None:
    tree = _tree()
    note = _checkpoint_note(tree)
    proof = inclusion_proof(0, tree.size, tree)
    with pytest.raises(InvalidInput):
        make_receipt(11, proof, note)
    with pytest.raises(InvalidInput):
        make_receipt(-1, proof, note)
    with pytest.raises(InvalidInput):
        make_receipt(0, [b"short"], note)
    with pytest.raises(InvalidInput):
        make_receipt(0, proof, "not a note\n")


def test_verify_receipt_needs_exactly_one_leaf_form() -> None:
    receipt = _receipt(0)
    with pytest.raises(InvalidInput):
        verify_receipt(receipt, verifier=LOG.verifier)
    with pytest.raises(InvalidInput):
        verify_receipt(
            receipt, verifier=LOG.verifier, leaf_bytes=ENTRIES[0], leaf_hash=leaf_hash(ENTRIES[0])
        )
