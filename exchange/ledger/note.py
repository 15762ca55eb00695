"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys (signature type 0x01).

A note is ``text`` (ending in a newline), a blank line, then one or more signature lines
``— <key name> base64(key ID || signature)``. Verification follows the spec: signatures
from unknown (name, key ID) pairs are ignored, a known key's bad signature rejects the
whole note, and at least one known key must have signed. Only Ed25519 is accepted
(key-type allowlist); verifier keys use the ``name+hex8+base64(0x01 || pubkey)`` form.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from exchange.errors import InvalidInput, VerificationFailed

ED25519: Final = 0x01
"""Signature type byte for Ed25519 note signatures (signed-note, "Signature types")."""
MAX_SIGNATURES: Final = 100
"""Signature lines accepted per note; the spec requires at least 16 ("Format")."""
MAX_NOTE_BYTES: Final = 1 << 20
"""Whole-note size limit, generous enough for 100 post-quantum signatures."""

_SIG_PREFIX: Final = "— "  # em dash U+2014, space
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}", re.ASCII)


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || signature type || public key)[:4] (signed-note "Signatures")."""
    return sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode spaces, no '+', no control characters (signed-note "Format")."""
    return (
        bool(name)
        and "+" not in name
        and not any(ch.isspace() for ch in name)
        and _CONTROL.search(name) is None
    )


def _b64decode_strict(text: str) -> bytes:
    """Standard, padded, canonical base64 (RFC 4648 §4) or ``ValueError``."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return raw


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted Ed25519 note key: its name, public key and derived key ID."""

    name: str
    public_key: Ed25519PublicKey = field(compare=False, repr=False)
    key_id: bytes = field(init=False)
    public_key_bytes: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise InvalidInput(f"invalid note key name {self.name!r}", code="invalid-key-name")
        if not isinstance(self.public_key, Ed25519PublicKey):
            raise InvalidInput("note keys must be Ed25519", code="unsupported-key-type")
        raw = _raw_public(self.public_key)
        object.__setattr__(self, "public_key_bytes", raw)
        object.__setattr__(self, "key_id", key_id(self.name, ED25519, raw))

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``name+hex8+base64(0x01 || 32-byte key)``; the key ID must match."""
        parts = vkey.split("+", 2)
        if len(parts) != 3 or not _KEY_ID_HEX.fullmatch(parts[1]):
            raise InvalidInput("malformed verifier key", code="invalid-vkey")
        name, hex_id, b64 = parts
        try:
            material = _b64decode_strict(b64)
        except ValueError as e:
            raise InvalidInput("verifier key is not base64", code="invalid-vkey") from e
        if not material or material[0] != ED25519:
            raise InvalidInput(
                "only Ed25519 (type 0x01) note keys are accepted", code="unsupported-key-type"
            )
        if len(material) != 33:
            raise InvalidInput("an Ed25519 verifier key holds 32 bytes", code="invalid-vkey")
        try:
            public_key = Ed25519PublicKey.from_public_bytes(material[1:])
        except ValueError as e:
            raise InvalidInput("invalid Ed25519 public key", code="invalid-vkey") from e
        verifier = cls(name, public_key)
        if verifier.key_id.hex() != hex_id:
            raise InvalidInput("verifier key ID does not match the key", code="invalid-vkey")
        return verifier

    def vkey(self) -> str:
        """The ``name+hex8+base64(0x01 || pubkey)`` verifier key string."""
        material = base64.b64encode(bytes([ED25519]) + self.public_key_bytes).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check an Ed25519 signature (RFC 8032) over ``message``; raise or return ``None``."""
        try:
            if len(signature) != 64:
                raise InvalidSignature
            self.public_key.verify(signature, message)
        except InvalidSignature as e:
            raise VerificationFailed(
                f"bad signature from note key {self.name}", code="note-signature-invalid"
            ) from e


@dataclass(frozen=True, slots=True, eq=False)
class Signer:
    """An Ed25519 note signing key. The private key never appears in ``repr``."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)
    verifier: Verifier = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise InvalidInput("note keys must be Ed25519", code="unsupported-key-type")
        object.__setattr__(self, "verifier", Verifier(self.name, self.private_key.public_key()))

    @property
    def key_id(self) -> bytes:
        """SHA-256(name || 0x0A || 0x01 || pubkey)[:4]."""
        return self.verifier.key_id

    def vkey(self) -> str:
        """The verifier key to publish for this signer."""
        return self.verifier.vkey()

    def signature_line(self, text: bytes) -> str:
        """``— name base64(key ID || Ed25519 signature over text)`` plus newline."""
        blob = self.key_id + self.private_key.sign(text)
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and the signature after the ID."""

    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class UnverifiedNote:
    """A structurally valid note whose signatures have NOT been checked."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note with at least one signature verified by a trusted key."""

    text: str
    signatures: tuple[NoteSignature, ...]
    """Signatures verified by a known key."""
    unverified_signatures: tuple[NoteSignature, ...] = ()
    """Signatures from unknown keys, ignored per the spec (e.g. witness cosignatures)."""

    @property
    def verified_names(self) -> tuple[str, ...]:
        """The names of the keys whose signatures verified, in note order."""
        return tuple(s.name for s in self.signatures)


def _malformed(detail: str) -> VerificationFailed:
    return VerificationFailed(f"malformed note: {detail}", code="note-malformed")


def _check_text(text: str) -> bytes:
    """UTF-8 bytes of a note text, with the spec's character rules enforced."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _malformed("not valid UTF-8") from e
    if _CONTROL.search(text):
        raise _malformed("control character")
    return raw


def parse_unverified_note(note: str | bytes) -> UnverifiedNote:
    """Split a note into text and signature lines without checking any signature."""
    # 1. Size first, so an oversized note costs nothing more.
    if len(note) > MAX_NOTE_BYTES:
        raise VerificationFailed(
            f"note is larger than {MAX_NOTE_BYTES} bytes", code="note-too-large"
        )
    # 2. Valid UTF-8 without control characters other than newline.
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _malformed("not valid UTF-8") from e
    if len(_check_text(note)) > MAX_NOTE_BYTES:
        raise VerificationFailed(
            f"note is larger than {MAX_NOTE_BYTES} bytes", code="note-too-large"
        )
    # 3. The text ends at the last blank line; it keeps its final newline (signed-note "Format").
    split = note.rfind("\n\n")
    if split < 0:
        raise _malformed("no blank line before signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise _malformed("no signature lines, or no final newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _malformed(f"more than {MAX_SIGNATURES} signatures")
    # 4. Every signature line is "— name base64(key ID || signature)".
    signatures = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise _malformed("signature line does not start with an em dash and a space")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not valid_key_name(name):
            raise _malformed("bad key name in signature line")
        try:
            blob = _b64decode_strict(b64)
        except ValueError as e:
            raise _malformed("signature is not base64") from e
        if len(blob) < 5:
            raise _malformed("signature too short")
        signatures.append(NoteSignature(name, blob[:4], blob[4:]))
    return UnverifiedNote(text, tuple(signatures))


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> VerifiedNote:
    """Parse and verify a note against trusted keys (signed-note "Signatures").

    Raises :class:`VerificationFailed` if the note is malformed, a known key's signature
    fails, a known key signed twice, or no known key signed at all.
    """
    # 1. Structure, character set and size.
    parsed = parse_unverified_note(note)
    message = parsed.text.encode("utf-8")
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[NoteSignature] = []
    unknown: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in parsed.signatures:
        # 2. Unknown (name, key ID) pairs are ignored, even if one half matches a known key.
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unknown.append(sig)
            continue
        # 3. A known key signs at most once.
        if (sig.name, sig.key_id) in seen:
            raise _malformed(f"key {sig.name} signed more than once")
        seen.add((sig.name, sig.key_id))
        # 4. A known key's signature must verify, or the whole note is rejected.
        verifier.verify(message, sig.signature)
        verified.append(sig)
    # 5. At least one known key signed.
    if not verified:
        raise VerificationFailed("note has no signature from a trusted key", code="note-unverified")
    return VerifiedNote(parsed.text, tuple(verified), tuple(unknown))


def sign_note(text: str, signers: Iterable[Signer]) -> str:
    """Sign ``text`` (which must end in a newline) with every signer, in order."""
    keys = list(signers)
    if not text.endswith("\n"):
        raise InvalidInput("note text must end with a newline", code="invalid-note-text")
    try:
        message = _check_text(text)
    except VerificationFailed as e:
        raise InvalidInput(e.detail, code="invalid-note-text") from e
    if not 0 < len(keys) <= MAX_SIGNATURES:
        raise InvalidInput(f"a note needs 1 to {MAX_SIGNATURES} signers", code="invalid-signers")
    if len({(k.name, k.key_id) for k in keys}) != len(keys):
        raise InvalidInput("the same key cannot sign a note twice", code="invalid-signers")
    note = text + "\n" + "".join(k.signature_line(message) for k in keys)
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise InvalidInput(f"note is larger than {MAX_NOTE_BYTES} bytes", code="invalid-note-text")
    return note
