"""Subject back-pointers: each subject's latest ledger index, for a batch's ``prev_subject``.

Every leaf names the index of its subject's previous entry (``prev_subject``), so an auditor
can walk one subject's entries backwards and a citizen's access log is a chain. The writer
needs, for each subject in a batch, that subject's latest index in the tree it extends.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text

from exchange.ledger.leaf import subject_prefix
from exchange.persistence.models import LedgerEntry

_LAST_BY_SUBJECT_PG = text(
    # One round trip; each subject is one backward probe of ix_ledger_entries_subject_prefix
    # (subject_prefix, idx), not a scan of all its entries as GROUP BY would be; the subject
    # is compared in full (two pseudonyms may share a prefix).
    "SELECT s, (SELECT max(idx) FROM ledger_entries WHERE subject_prefix = p AND subject = s) "
    "FROM unnest(CAST(:subjects AS text[]), CAST(:prefixes AS bigint[])) AS w(s, p)"
)


class SubjectIndex:
    """Each subject's latest ledger index, remembered between this writer's batches.

    Valid only while the head is the one this writer committed last: a batch whose head
    differs (another process appended, or storage changed) starts from an empty memory and
    reads every subject it needs. What a batch learns is kept only once it has committed.
    """

    MAX = 1 << 16  # subjects remembered (~10 MB at most); beyond that, start again

    def __init__(self) -> None:
        self._last: dict[str, int | None] = {}
        self._head: tuple[int, bytes] | None = None
        self._pending: tuple[tuple[int, bytes], dict[str, int | None]] | None = None

    def discard(self) -> None:
        self._pending = None

    def missing(self, head: tuple[int, bytes] | None, subjects: set[str]) -> list[str]:
        """Those of ``subjects`` a :meth:`lookup` at ``head`` would have to read, sorted."""
        known = self._last if head == self._head else {}
        return sorted(s for s in subjects if s not in known)

    def lookup(
        self,
        conn: Connection,
        head: tuple[int, bytes],
        subjects: set[str],
        read: dict[str, int | None] | None = None,
    ) -> dict[str, int | None]:
        """The latest index of each of ``subjects`` in the tree whose head is ``head``;
        ``read``: latest indices already read from storage in this transaction."""
        if head != self._head:
            self._last, self._head = {}, None
        known = self._last
        found = {s: known[s] for s in subjects if s in known}
        if read:
            found.update((s, read[s]) for s in subjects if s in read and s not in found)
        if len(found) < len(subjects):
            found.update(_last_indices(conn, {s for s in subjects if s not in found}))
        return found

    def appended(self, head: tuple[int, bytes], last: dict[str, int | None]) -> None:
        """What the batch being committed makes true; applied by :meth:`committed`."""
        self._pending = (head, last)

    def committed(self) -> None:
        if self._pending is None:
            return
        head, last = self._pending
        self._pending = None
        if len(self._last) + len(last) > self.MAX:
            self._last = {}
        self._last.update(last)
        self._head = head


def _last_indices(conn: Connection, subjects: set[str]) -> dict[str, int | None]:
    """Each subject's latest index in the ledger (None if it has none), in one query."""
    last: dict[str, int | None] = dict.fromkeys(subjects)
    if not subjects:
        return last
    wanted = sorted(subjects)
    if conn.dialect.name == "postgresql":
        prefixes = [subject_prefix(s) for s in wanted]
        for subject, idx in conn.execute(
            _LAST_BY_SUBJECT_PG, {"subjects": wanted, "prefixes": prefixes}
        ):
            last[subject] = None if idx is None else int(idx)
        return last
    for i in range(0, len(wanted), 500):  # SQLite: bounded host parameters per statement
        chunk = wanted[i : i + 500]
        for subject, idx in conn.execute(
            select(LedgerEntry.subject, func.max(LedgerEntry.idx))
            .where(
                LedgerEntry.subject_prefix.in_({subject_prefix(s) for s in chunk}),
                LedgerEntry.subject.in_(chunk),
            )
            .group_by(LedgerEntry.subject)
        ):
            if subject is not None:
                last[subject] = int(idx)
    return last
