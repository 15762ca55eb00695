"""Tests for exchange.ledger.note (C2SP signed-note) and checkpoint text parsing.

Vectors: tests/vectors/signed-note/signed_note_vectors.json (C2SP spec example,
golang.org/x/mod sumdb/note KATs, transparency-dev/formats vkeys) and the byte-exact
C2SP spec examples in tests/vectors/c2sp-format-examples/.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.errors import InvalidInput, VerificationFailed
from exchange.ledger.checkpoint import parse_checkpoint
from exchange.ledger.note import (
    MAX_NOTE_BYTES,
    Signer,
    Verifier,
    key_id,
    open_note,
    parse_unverified_note,
    sign_note,
)

VECTORS = Path(__file__).parent / "vectors"
NOTES = json.loads((VECTORS / "signed-note" / "signed_note_vectors.json").read_text("utf-8"))
EXAMPLES = VECTORS / "c2sp-format-examples"
VALID = {v["id"]: v for v in NOTES["valid"]}
INVALID = {v["id"]: v for v in NOTES["invalid"]}
PETER = VALID["go-sumdb-note-peterneumann"]
ENOCH_VKEY = VALID["go-sumdb-note-two-signers"]["vkeys"][1]


def signer_from_go_skey(skey: str) -> Signer:
    """Test-only parser for Go's ``PRIVATE+KEY+name+hexid+base64(0x01 || seed)``."""
    private, key, name, hex_id, b64 = skey.split("+", 4)
    assert (private, key) == ("PRIVATE", "KEY")
    material = base64.b64decode(b64, validate=True)
    assert material[0] == 0x01
    assert len(material) == 33
    signer = Signer(name, Ed25519PrivateKey.from_private_bytes(material[1:]))
    assert signer.key_id.hex() == hex_id
    return signer


def _example(name: str) -> str:
    return (EXAMPLES / name).read_bytes().decode("utf-8")


# --- valid vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", NOTES["valid"], ids=lambda v: v["id"])
def test_valid_vectors_verify(vector: dict[str, Any]) -> None:
    vkeys = vector.get("vkeys") or [vector["vkey"]]
    verifiers = [Verifier.from_vkey(k) for k in vkeys]
    for v, k in zip(verifiers, vkeys, strict=True):
        assert v.vkey() == k
    note = open_note(vector["note"], verifiers)
    assert note.text == vector["text"]
    assert note.verified_names == tuple(v.name for v in verifiers)
    assert not note.unverified_signatures
    # bytes in, same result
    assert open_note(vector["note"].encode("utf-8"), verifiers).text == vector["text"]


def test_c2sp_example_key_id() -> None:
    vector = VALID["c2sp-signed-note-example"]
    verifier = Verifier.from_vkey(vector["vkey"])
    assert verifier.key_id.hex() == "530d903a"
    assert key_id("example.com/foo", 0x01, verifier.public_key_bytes).hex() == "530d903a"


def test_go_skey_resigns_byte_for_byte() -> None:
    signer = signer_from_go_skey(PETER["skey_TEST_ONLY"])
    assert signer.vkey() == PETER["vkey"]
    assert sign_note(PETER["text"], [signer]) == PETER["note"]


def test_unknown_signer_is_ignored_but_reported() -> None:
    both = VALID["go-sumdb-note-two-signers"]
    note = open_note(both["note"], [Verifier.from_vkey(PETER["vkey"])])
    assert note.verified_names == ("PeterNeumann",)
    assert [s.name for s in note.unverified_signatures] == ["EnochRoot"]


# --- invalid vectors -------------------------------------------------------------------

INVALID_CODES = {
    "go-no-signatures": "note-malformed",
    "go-blank-line-only": "note-malformed",
    "go-missing-final-newline": "note-malformed",
    "go-control-char": "note-malformed",
    "go-space-in-key-name": "note-malformed",
    "go-trailing-garbage-line": "note-malformed",
    "go-corrupted-signature": "note-signature-invalid",
    "go-unknown-only": "note-unverified",
    "go-101-signatures": "note-malformed",
}


@pytest.mark.parametrize("vector", NOTES["invalid"], ids=lambda v: v["id"])
def test_invalid_vectors_are_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(VerificationFailed) as e:
        open_note(vector["note"], [Verifier.from_vkey(vector["vkey"])])
    assert e.value.code == INVALID_CODES[vector["id"]]


def test_every_invalid_vector_has_an_expected_code() -> None:
    assert set(INVALID_CODES) == set(INVALID)


# --- verifier keys ---------------------------------------------------------------------


@pytest.mark.parametrize("vkey_id", ["go-bad-wrong-length", "go-bad-unknown-alg"])
def test_bad_vkeys_are_rejected(vkey_id: str) -> None:
    with pytest.raises(InvalidInput):
        Verifier.from_vkey(NOTES["vkeys"][vkey_id]["vkey"])


def test_vkey_with_plus_in_base64_is_split_on_the_first_two_plus_only() -> None:
    vkey = NOTES["vkeys"]["tdf-ed25519-with-plus-in-base64"]["vkey"]
    verifier = Verifier.from_vkey(vkey)
    assert verifier.name == "TEST"
    assert verifier.vkey() == vkey


def test_cosignature_type_0x04_vkey_is_refused_but_its_key_id_derives() -> None:
    # We accept only Ed25519 note keys (type 0x01): witness cosignature keys are not ours.
    vkey = NOTES["vkeys"]["tdf-cosignature-v1-type-0x04"]["vkey"]
    with pytest.raises(InvalidInput) as e:
        Verifier.from_vkey(vkey)
    assert e.value.code == "unsupported-key-type"
    name, hex_id, b64 = vkey.split("+", 2)
    material = base64.b64decode(b64)
    assert key_id(name, material[0], material[1:]).hex() == hex_id


def test_vkey_with_a_wrong_key_id_is_rejected() -> None:
    # tdf-incorrect-keyhash is a template; fill it with real key material.
    material = PETER["vkey"].split("+", 2)[2]
    with pytest.raises(InvalidInput):
        Verifier.from_vkey(f"rekor.sigstore.dev+00000000+{material}")


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TX",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq_LDE4izWy10TW",
    ],
)
def test_malformed_vkeys_are_rejected(vkey: str) -> None:
    with pytest.raises(InvalidInput):
        Verifier.from_vkey(vkey)


# --- signing and opening ---------------------------------------------------------------


def _signer(name: str) -> Signer:
    return Signer(name, Ed25519PrivateKey.generate())


def test_round_trip_with_several_signers_in_order() -> None:
    a, b = _signer("a.example/log"), _signer("b.example/witness")
    text = "line one\n\nline three after an empty line\n"
    note = sign_note(text, [a, b])
    opened = open_note(note, [b.verifier, a.verifier])
    assert opened.text == text
    assert opened.verified_names == ("a.example/log", "b.example/witness")


def test_sixteen_signatures_are_accepted() -> None:
    signers = [_signer(f"w{i}.example") for i in range(16)]
    note = sign_note("sixteen\n", signers)
    assert len(open_note(note, [s.verifier for s in signers]).signatures) == 16


def test_same_name_other_key_is_ignored_and_bad_known_signature_rejects() -> None:
    real, impostor = _signer("log.example"), _signer("log.example")
    note = sign_note("hello\n", [impostor, real])
    opened = open_note(note, [real.verifier])
    assert opened.verified_names == ("log.example",)
    assert opened.unverified_signatures[0].key_id == impostor.key_id
    both = open_note(note, [impostor.verifier, real.verifier])
    assert both.verified_names == ("log.example", "log.example")
    tampered = note.replace("hello", "HELLO")
    with pytest.raises(VerificationFailed) as e:
        open_note(tampered, [real.verifier])
    assert e.value.code == "note-signature-invalid"


def test_a_known_key_signing_twice_is_rejected() -> None:
    signer = _signer("log.example")
    note = sign_note("hello\n", [signer])
    doubled = note + note.split("\n\n", 1)[1]
    with pytest.raises(VerificationFailed) as e:
        open_note(doubled, [signer.verifier])
    assert e.value.code == "note-malformed"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("no newline", "invalid-note-text"),
        ("", "invalid-note-text"),
        ("tab\there\n", "invalid-note-text"),
        ("carriage\r\n", "invalid-note-text"),
        ("lone \ud800 surrogate\n", "invalid-note-text"),
    ],
)
def test_sign_rejects_bad_text(text: str, code: str) -> None:
    with pytest.raises(InvalidInput) as e:
        sign_note(text, [_signer("log.example")])
    assert e.value.code == code


def test_sign_rejects_no_signers_and_duplicates() -> None:
    signer = _signer("log.example")
    with pytest.raises(InvalidInput):
        sign_note("x\n", [])
    with pytest.raises(InvalidInput):
        sign_note("x\n", [signer, signer])


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "a\u3000b", "tab\tname", "nl\n"])
def test_bad_key_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidInput):
        _signer(name)


def test_unicode_key_names_are_allowed() -> None:
    signer = _signer("上海.example/账本")
    assert Verifier.from_vkey(signer.vkey()) == signer.verifier
    assert open_note(sign_note("你好\n", [signer]), [signer.verifier]).text == "你好\n"


def test_oversized_note_is_rejected_before_parsing() -> None:
    signer = _signer("log.example")
    note = sign_note("x\n", [signer])
    huge = "y" * MAX_NOTE_BYTES + "\n" + note
    with pytest.raises(VerificationFailed) as e:
        open_note(huge, [signer.verifier])
    assert e.value.code == "note-too-large"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace("— ", "-- "),
        lambda n: n.replace("— ", "—  "),
        lambda n: n.replace("=\n", "\n"),  # unpadded base64
        lambda n: n[:-1] + "\r\n",
        lambda n: n.replace("\n\n", "\n"),
        lambda n: n + "\n",
        lambda n: n.encode("utf-8").replace(b"\xe2\x80\x94", b"\xe2\x80"),  # broken UTF-8
    ],
)
def test_malformed_notes_are_rejected(mutate: Any) -> None:
    signer = _signer("log.example")
    note = sign_note("x\n", [signer])
    assert note.endswith("=\n")
    with pytest.raises(VerificationFailed):
        open_note(mutate(note), [signer.verifier])


def test_private_key_is_not_in_repr() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    signer = Signer("log.example", key)
    assert "private" not in repr(signer).lower()
    assert bytes(range(32)).hex() not in repr(signer)


# --- C2SP format examples (parse only: no public keys are published for them) -----------


def test_checkpoint_example_parses() -> None:
    note = parse_unverified_note(_example("checkpoint_example.txt"))
    checkpoint = parse_checkpoint(note.text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert base64.b64encode(checkpoint.root) == b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert checkpoint.extensions == ()
    assert checkpoint.to_text() == note.text
    [sig] = note.signatures
    assert sig.name == "example.com/behind-the-sofa"
    assert len(sig.signature) == 64  # 68 bytes = 4-byte key ID + Ed25519


def test_checkpoint_with_witness_cosignature_example_parses() -> None:
    note = parse_unverified_note(_example("checkpoint_with_witness_cosignature_example.txt"))
    _, witness_sig = note.signatures
    assert parse_checkpoint(note.text).size == 20852163
    assert witness_sig.name == "witness.example.com/w1"
    assert len(witness_sig.signature) == 72  # u64 timestamp + Ed25519 signature
    assert int.from_bytes(witness_sig.signature[:8], "big") == 1679315147
    message = _example("cosignature_v1_signed_message_example.txt")
    header, time_line, body = message.split("\n", 2)
    assert (header, time_line) == ("cosignature/v1", "time 1679315147")
    assert body == note.text
    with pytest.raises(VerificationFailed):
        open_note(_example("checkpoint_with_witness_cosignature_example.txt"), [])


def test_witness_examples_parse() -> None:
    request = _example("witness_add_checkpoint_request_example.txt")
    head, _, checkpoint_note = request.partition("\n\n")
    old, *proof = head.split("\n")
    assert old == "old 20852014"
    assert all(len(base64.b64decode(p, validate=True)) == 32 for p in proof)
    note = parse_unverified_note(checkpoint_note)
    assert parse_checkpoint(note.text).size == 20852163
    assert len(note.signatures) == 2
    response = _example("witness_add_checkpoint_response_example.txt")
    sigs = parse_unverified_note("any text\n\n" + response).signatures
    assert [s.name for s in sigs] == [
        "witness.example/w1",
        "witness.example/w1",
        "witness.example/w2",
    ]
    assert {len(s.signature) for s in sigs} == {72}


def test_same_key_id_under_another_name_is_ignored() -> None:
    signer = _signer("log.example")
    note = sign_note("hello\n", [signer])
    forged = base64.b64encode(signer.key_id + bytes(64)).decode()
    opened = open_note(note + f"— other.example {forged}\n", [signer.verifier])
    assert opened.verified_names == ("log.example",)
    assert [s.name for s in opened.unverified_signatures] == ["other.example"]
