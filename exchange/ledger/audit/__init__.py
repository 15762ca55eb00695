"""Offline audit of a ledger export (``certex audit verify``): pure and streaming.

:func:`audit_export` proves, from an export (:mod:`exchange.ledger.export`), the node's
verifier key and checkpoints an auditor kept, that the export holds exactly the entries the
node signed, in one hash chain with correct subject back-pointers, and that the log only
grew since; or it raises :class:`AuditFailed` with the first bad index and the problem.
Locating a change: each leaf commits to its predecessor (``prev``), so editing entry k
breaks the link k -> k+1 only (if the next link breaks too, entry k+1 itself changed); the
last entry has no successor, so its edit shows only in the signed root. A leaf whose own
``index`` is not its position was ``reordered`` (it turns up later) or entries are
``missing``. A signed checkpoint smaller than a kept one means ``truncated``. A valid,
signed export whose first m entries miss the root of a kept checkpoint of size m is
``forked`` (only the key holder can do that); one root cannot say which entry changed, so
the report gives the range above the largest kept checkpoint that still matches. The index
reported is the lowest of the fewest changed entries that explain what is seen; a run
re-chained end to end looks like one change at its end, bounded below by the kept
checkpoints.

:mod:`.stream` is the sequential audit and its diagnosis; :mod:`.files` audits an export in
a regular file by byte ranges, in processes, each scanned by :mod:`.scan`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import IO, cast

from exchange.errors import VerificationFailed
from exchange.ledger.audit.files import (
    audit_file,
    audit_stream,
    regular_binary,
    regular_file,
    sequential,
)
from exchange.ledger.audit.stream import AuditFailed, AuditReport, Problem, Progress
from exchange.ledger.checkpoint import Checkpoint, open_checkpoint
from exchange.ledger.note import Verifier

__all__ = ["AuditFailed", "AuditReport", "Problem", "Progress", "audit_export"]


def _open_older(notes: str | Sequence[str] | None, verifier: Verifier) -> list[Checkpoint]:
    """The auditor's kept checkpoints, each signed by the log key, smallest first."""
    olders = []
    for note in [notes] if isinstance(notes, str) else notes or ():
        try:
            olders.append(open_checkpoint(note, verifier))
        except VerificationFailed as e:
            detail = f"the older checkpoint does not verify: {e.detail}"
            raise AuditFailed("bad-signature", None, detail) from e
    return sorted(olders, key=lambda c: c.size)


def audit_export(
    lines: Iterable[str] | IO[bytes],
    *,
    verifier: Verifier,
    older_checkpoint: str | Sequence[str] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> AuditReport:
    """Verify an export line by line; raise :class:`AuditFailed` at the first bad index.

    ``older_checkpoint`` is one or more signed checkpoint notes the auditor kept from
    earlier. Memory is O(log n) for the tree plus one slot per distinct subject.

    A regular file opened in text mode (UTF-8, strict errors, not read from yet), or in
    binary mode, is read as bytes instead (:func:`.files.audit_file`): in blocks, and for
    exports of at least :data:`.files.PARALLEL_MIN_ENTRIES` entries by ``workers``
    processes (default: one per usable core; ``workers=1`` never starts a process, any
    other number always does). Any other binary stream (a pipe, standard input) is read
    once, in blocks, in this process (:func:`.files.audit_stream`), as UTF-8.
    The result, and the first bad index and problem on failure, are the same either way.
    """
    # 1. The auditor's own kept checkpoints verify with the log key.
    olders = _open_older(older_checkpoint, verifier)
    report = progress or (lambda done, total: None)
    if isinstance(lines, io.RawIOBase | io.BufferedIOBase):
        binary = cast("IO[bytes]", lines)
        fd = regular_binary(binary)
        if fd is not None:
            return audit_file(fd, verifier, olders, report, workers)
        return audit_stream(binary, verifier, olders, report)
    text = cast("Iterable[str]", lines)
    fd = regular_file(text)
    if fd is not None:
        return audit_file(fd, verifier, olders, report, workers)
    # 2. The header names the log this key speaks for; 3. every entry: a canonical leaf at
    # its position, chained, with a right back-pointer; then the checkpoint and history.
    return sequential(text, None, None, verifier, olders, report)
