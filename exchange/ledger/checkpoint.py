"""C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the signed tree head of the ledger.

The note text is ``origin\\nsize\\nbase64(root)\\n`` followed by optional extension lines.
The ledger signs its checkpoints with one Ed25519 note key whose name is the origin
(``{node host}/ledger``), as the spec recommends ("Signatures"), and verifiers insist on it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Final

from exchange.errors import InvalidInput, VerificationFailed
from exchange.ledger.merkle import HASH_SIZE
from exchange.ledger.note import Signer, Verifier, open_note, sign_note

MAX_TREE_SIZE: Final = (1 << 64) - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f]")


def _bad_line(line: str) -> bool:
    return not line or _CONTROL.search(line) is not None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin, tree size, RFC 6962 root hash and opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if _bad_line(self.origin):
            raise InvalidInput("checkpoint origin must be one non-empty line", code="bad-origin")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise InvalidInput(f"bad tree size {self.size!r}", code="bad-tree-size")
        if len(self.root) != HASH_SIZE:
            raise InvalidInput("checkpoint root must be 32 bytes", code="bad-hash-length")
        if any(_bad_line(e) for e in self.extensions):
            raise InvalidInput(
                "extension lines must be non-empty single lines", code="bad-extension"
            )

    def to_text(self) -> str:
        """The note text (tlog-checkpoint "Note text"), ending in a newline."""
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )


def _malformed(detail: str) -> VerificationFailed:
    return VerificationFailed(f"malformed checkpoint: {detail}", code="checkpoint-malformed")


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text strictly (tlog-checkpoint "Note text").

    Three or more non-empty lines, each ending in a newline: the origin, a decimal size
    without leading zeros, the canonical base64 of a 32-byte root, then extension lines.
    Raises :class:`VerificationFailed` with code ``checkpoint-malformed``.
    """
    if not text.endswith("\n"):
        raise _malformed("text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise _malformed("fewer than three lines")
    if any(_bad_line(line) for line in lines):
        raise _malformed("empty line or control character")
    origin, size_line, root_line, *extensions = lines
    if not _DECIMAL.fullmatch(size_line) or int(size_line) > MAX_TREE_SIZE:
        raise _malformed("tree size is not a decimal without leading zeros")
    try:
        root = base64.b64decode(root_line, validate=True)
    except ValueError as e:
        raise _malformed("root hash is not base64") from e
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_line:
        raise _malformed("root hash is not the base64 of 32 bytes")
    return Checkpoint(origin, int(size_line), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The checkpoint as a note signed by the log key, whose name must be the origin."""
    if signer.name != checkpoint.origin:
        raise InvalidInput(
            f"log key {signer.name!r} does not match origin {checkpoint.origin!r}",
            code="bad-origin",
        )
    return sign_note(checkpoint.to_text(), [signer])


def open_checkpoint(note: str | bytes, verifier: Verifier, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and return the checkpoint it carries.

    Raises :class:`VerificationFailed` unless the log key signed the note, the text is a
    well-formed checkpoint, its origin is the log key's name and, if given, ``origin``.
    """
    # 1. The log's key signed the note (other signatures, e.g. witnesses', are ignored).
    verified = open_note(note, [verifier])
    # 2. The text is a checkpoint.
    checkpoint = parse_checkpoint(verified.text)
    # 3. The checkpoint is for the log this key speaks for, and the one the caller expects.
    if checkpoint.origin != verifier.name:
        raise VerificationFailed(
            f"checkpoint origin {checkpoint.origin!r} is not the log key's name {verifier.name!r}",
            code="checkpoint-wrong-origin",
        )
    if origin is not None and checkpoint.origin != origin:
        raise VerificationFailed(
            f"checkpoint origin {checkpoint.origin!r} is not {origin!r}",
            code="checkpoint-wrong-origin",
        )
    return checkpoint
