"""The sequential audit: one entry line after another, and the diagnosis of a bad one.

What each entry must be (a canonical leaf at its position, chained onto its predecessor,
with a right subject back-pointer), how the first one that is not is named (edited,
missing, reordered), and the checks once every entry is folded (the checkpoint signature,
its size, the root, kept checkpoints: forked, truncated). :mod:`.files` scans a regular
file faster and hands over to :func:`stream_entries` at the first thing that is off.
"""

from __future__ import annotations

import binascii
import hmac
import re
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Final, Literal, NoReturn

import orjson

from exchange.errors import ExchangeError, InvalidInput, LedgerIntegrityError, VerificationFailed
from exchange.ledger.checkpoint import Checkpoint, open_checkpoint
from exchange.ledger.export import (
    ExportHeader,
    is_checkpoint_line,
    read_checkpoint_line,
    read_entry_line,
    read_header,
)
from exchange.ledger.leaf import GENESIS_PREV, LEAF_FIELDS, LEAF_VERSION, Leaf, decode_leaf
from exchange.ledger.merkle import EMPTY_ROOT, RootBuilder
from exchange.ledger.note import Verifier

Problem = Literal[
    "edited", "missing", "reordered", "truncated", "forked", "bad-signature", "malformed"
]
Progress = Callable[[int, int], None]
"""``progress(done, total)``; ``total`` is the size the export's header announces."""
PROGRESS_EVERY: Final = 1 << 14
"""Entries between two progress calls (a multiple of the 1024-leaf fold batch)."""

_SORTED_FIELDS: Final = sorted(LEAF_FIELDS)
_PSEUDONYM: Final = re.compile(r"[0-9a-f]{64}").fullmatch


class AuditFailed(LedgerIntegrityError):
    """The export does not prove an intact ledger: ``problem`` at ``index`` (None: no entry)."""

    def __init__(self, problem: Problem, index: int | None, detail: str) -> None:
        super().__init__(detail, code=f"audit-{problem}")
        self.problem: Problem = problem
        self.index = index

    def describe(self) -> str:
        """``index 41: edited — <detail>``; ``checkpoint:`` or ``export:`` if no entry is."""
        where = "checkpoint" if self.problem == "bad-signature" else "export"
        if self.index is not None:
            where = f"index {self.index}"
        return f"{where}: {self.problem} — {self.detail}"


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What a passing audit proved about the export."""

    origin: str
    node: str
    checkpoint: Checkpoint  # the signed tree head the entries hash to
    consistent_with: tuple[Checkpoint, ...]  # kept checkpoints proven to be prefixes of it
    subjects: int  # distinct subject pseudonyms whose back-pointer chains were checked


@dataclass(slots=True)
class State:
    """What streaming keeps: O(log n) for the tree, one slot per subject."""

    snap_sizes: list[int]  # kept checkpoint sizes not reached yet, ascending
    size: int = 0
    prev: bytes = bytes.fromhex(GENESIS_PREV)
    builder: RootBuilder = field(default_factory=RootBuilder)
    seen: dict[str, int] = field(default_factory=dict)  # subject -> index of its last entry
    roots: dict[int, bytes] = field(default_factory=dict)  # prefix roots at kept sizes

    def next_snap(self) -> int:
        while self.snap_sizes and self.snap_sizes[0] <= self.size:
            self.snap_sizes.pop(0)
        return self.snap_sizes[0] if self.snap_sizes else -1


@dataclass(frozen=True, slots=True)
class _Entry:
    hash: bytes
    leaf: Leaf | None
    error: str | None  # why the bytes are not a ledger leaf


def malformed(index: int | None, detail: str) -> AuditFailed:
    return AuditFailed("malformed", index, detail)


def header_of(line: str | None, verifier: Verifier) -> ExportHeader:
    """The header, once it names the log this key speaks for."""
    if line is None:
        raise malformed(None, "the export is empty")
    try:
        header = read_header(line)
    except InvalidInput as e:
        raise malformed(None, e.detail) from e
    if header.origin != verifier.name:
        detail = f"the export is from log {header.origin!r}, the key is for {verifier.name!r}"
        raise AuditFailed("bad-signature", None, detail)
    return header


def parse_entry(line: str, position: int) -> _Entry:
    """One entry line, read carefully: line problems raise, leaf problems are recorded."""
    try:
        _, raw = read_entry_line(line)
    except InvalidInput as e:
        raise malformed(position, f"entry line {position}: {e.detail}") from e
    h = sha256(b"\x00" + raw).digest()
    try:
        leaf = decode_leaf(raw)
    except ExchangeError as e:
        return _Entry(h, None, e.detail)
    if type(leaf.fields["v"]) is not int or type(leaf.time_ms) is not int:  # True == 1
        return _Entry(h, None, "v or time_ms is not an integer")
    return _Entry(h, leaf, None)


def _pointer_problem(leaf: Leaf, seen: dict[str, int]) -> str | None:
    """Why ``prev_subject`` is not the index of that subject's previous entry, if it is not."""
    expected = seen.get(leaf.subject) if leaf.subject is not None else None
    got = leaf.prev_subject
    if got == expected:
        return None
    shown = "null" if got is None else str(got)
    if leaf.subject is None:
        return f"has prev_subject {shown} but no subject"
    if expected is None:
        return f"has prev_subject {shown}, but its subject has no earlier entry"
    return f"has prev_subject {shown}, but its subject's previous entry is {expected}"


def _next_leaf(rest: Iterator[str], position: int) -> Leaf | None:
    """The next line's leaf, if it is a readable entry."""
    line = next(rest, None)
    with suppress(AuditFailed):
        if line is not None and not is_checkpoint_line(line):
            return parse_entry(line, position).leaf
    return None


def _find_index(rest: Iterator[str], wanted: int, position: int) -> int | None:
    """The position, from ``position`` on, of a leaf that says it is entry ``wanted``."""
    for pos, line in enumerate(rest, position):
        with suppress(ValueError, TypeError, KeyError):
            found = orjson.loads(binascii.a2b_base64(orjson.loads(line)["leaf"]))["index"]
            if type(found) is int and found == wanted:
                return pos
    return None


def _diagnose(e: _Entry, f: int, st: State, rest: Iterator[str]) -> NoReturn:
    """Entry f is the first that does not fit: find out which entry changed, and how."""
    before = "the genesis value" if f == 0 else f"the hash of entry {f - 1}"
    # 1. Bytes that are not a ledger leaf were changed.
    if e.leaf is None:
        raise AuditFailed("edited", f, f"entry {f} is not a valid ledger leaf: {e.error}")
    leaf, link_in = e.leaf, hmac.compare_digest(e.leaf.prev, st.prev)
    # 2. A leaf at the wrong position: its own index was edited, or entries moved or vanished.
    x = leaf.index
    if x != f:
        if link_in:
            raise AuditFailed("edited", f, f"entry {f} chains onto {before} but says it is {x}")
        found = _find_index(rest, f, f + 1)
        if found is not None:
            detail = f"entry {f} is at position {found}; position {f} holds {x}"
            raise AuditFailed("reordered", f, detail)
        if x > f:
            gap = f"entry {f} is" if x == f + 1 else f"entries {f}..{x - 1} are"
            raise AuditFailed("missing", f, f"{gap} missing: the next entry present is {x}")
        raise AuditFailed("edited", f, f"position {f} holds another leaf that says it is {x}")
    # 3. A broken link: whether the successor still chains onto f says which side changed.
    if not link_in:
        if f == 0:
            raise AuditFailed("edited", 0, "entry 0's prev is not the genesis value")
        broken = f"entry {f}'s prev does not match {before}"
        nxt = _next_leaf(rest, f + 1)
        if nxt is None:
            raise AuditFailed("edited", f - 1, f"{broken} (entry {f - 1} or {f} changed)")
        if hmac.compare_digest(nxt.prev, e.hash):
            raise AuditFailed("edited", f - 1, f"{broken}; entry {f + 1} still chains onto {f}")
        detail = f"{broken}, and entry {f + 1}'s prev does not match entry {f}"
        raise AuditFailed("edited", f, detail)
    # 4. The subject back-pointer (what is left once leaf, index and link are right).
    raise AuditFailed("edited", f, f"entry {f} {_pointer_problem(leaf, st.seen)}")


def _fast(it: Iterator[str], st: State, total: int, progress: Progress) -> str | None:  # noqa: PLR0912  one flat hot loop
    """Fold entries while all checks pass at once; return the first line that does not.

    What this accepts, :func:`parse_entry` (``decode_leaf``) accepts too; anything unusual
    is handed over. With keys in sorted order and only JSON scalars, ``orjson.dumps`` gives
    exactly ``canonical_json``'s bytes, so canonical form costs one re-serialisation.
    """
    loads, dumps, a2b, digest = orjson.loads, orjson.dumps, binascii.a2b_base64, sha256
    pending: list[bytes] = []  # leaf hashes not folded yet: RootBuilder.extend is cheaper
    seen, builder, push = st.seen, st.builder, pending.append
    size, prev_hex, snap, h = st.size, st.prev.hex(), st.next_snap(), st.prev
    line: str | None = None
    try:
        for line in it:
            try:
                obj = loads(line)
                stored, b64 = obj["index"], obj["leaf"]
                raw = a2b(b64)
                leaf = loads(raw)
                index, v = leaf["index"], leaf["v"]
                if not (
                    len(obj) == 2
                    and stored >= 0
                    # Lenient a2b skips stray characters; at this length it read strict base64.
                    and (len(raw) + 2) // 3 * 4 == len(b64)
                    and [*leaf] == _SORTED_FIELDS
                    and index == size
                    and v == LEAF_VERSION
                    and type(stored) is type(index) is type(v) is type(leaf["time_ms"]) is int
                    and leaf["prev"] == prev_hex
                    and raw.find(b"[") < 0
                    and raw.rfind(b"{") == 0
                    and dumps(leaf) == raw
                ):
                    break
                s, ps = leaf["subject"], leaf["prev_subject"]
                if s is None:
                    if ps is not None:
                        break
                else:
                    last = seen.get(s)
                    if last is None:
                        if ps is not None or type(s) is not str or not _PSEUDONYM(s):
                            break
                    elif type(ps) is not int or ps != last:
                        break
                    seen[s] = size
            except (ValueError, TypeError, KeyError, AttributeError):
                break  # binascii.Error, orjson.JSONDecodeError/JSONEncodeError included
            h = digest(b"\x00" + raw).digest()
            push(h)
            size += 1
            prev_hex = h.hex()
            if not size & 1023 or size == snap:
                builder.extend(pending)
                pending.clear()
                if size == snap:
                    st.size, st.roots[size] = size, builder.root()
                    snap = st.next_snap()
                if not size & (PROGRESS_EVERY - 1):
                    progress(size, total)
        else:
            line = None
    finally:
        builder.extend(pending)
        st.size, st.prev = size, h
    return line


def stream_entries(it: Iterator[str], st: State, total: int, progress: Progress) -> str:
    """Check every entry line; return the checkpoint line that follows them."""
    while (line := _fast(it, st, total, progress)) is not None:
        if is_checkpoint_line(line):
            return line
        e = parse_entry(line, st.size)
        if (
            e.leaf is None
            or e.leaf.index != st.size
            or not hmac.compare_digest(e.leaf.prev, st.prev)
            or _pointer_problem(e.leaf, st.seen) is not None
        ):
            _diagnose(e, st.size, st, it)
        if e.leaf.subject is not None:
            st.seen[e.leaf.subject] = st.size
        st.builder.append(e.hash)
        st.size, st.prev = st.size + 1, e.hash
        if st.snap_sizes and st.size == st.snap_sizes[0]:
            st.roots[st.size] = st.builder.root()
    raise malformed(st.size, "the export ends without a checkpoint line")


def _read_checkpoint(line: str, it: Iterator[str], position: int, verifier: Verifier) -> Checkpoint:
    try:
        note = read_checkpoint_line(line)
    except InvalidInput as e:
        raise malformed(position, e.detail) from e
    if any(extra.strip() for extra in it):
        raise malformed(None, "the export goes on after the checkpoint line")
    try:
        return open_checkpoint(note, verifier)
    except VerificationFailed as e:
        detail = f"the checkpoint does not verify: {e.detail}"
        raise AuditFailed("bad-signature", None, detail) from e


def _check_history(cp: Checkpoint, st: State, olders: list[Checkpoint]) -> None:
    """The root against the signed checkpoint, prefixes against kept ones, then truncation."""
    n = cp.size
    lo, hi = 0, None  # entries below lo match a kept checkpoint; hi: the first that does not
    for old in olders:
        if old.size > n:
            break
        if not hmac.compare_digest(st.roots.get(old.size, EMPTY_ROOT), old.root):
            hi = old.size
            break
        lo = old.size
    kept = f"the kept checkpoint of size {lo} matches" if lo else "no earlier checkpoint kept"
    if not hmac.compare_digest(st.builder.root(), cp.root):
        if hi is not None:
            detail = f"the entries miss the signed root: a re-chained run starts in [{lo}, {hi})"
            raise AuditFailed("edited", lo, detail)
        if n == 0:
            raise malformed(None, "the checkpoint of size 0 does not carry the empty root")
        detail = f"every link holds, but the entries miss the signed root: entry {n - 1} (or a"
        raise AuditFailed("edited", n - 1, f"{detail} run re-chained up to it) changed; {kept}")
    if hi is not None:
        detail = f"the export is signed, but its first {hi} entries miss the root of the kept"
        detail += f" checkpoint of size {hi}: history was rewritten in [{lo}, {hi}); {kept}"
        raise AuditFailed("forked", lo, detail)
    if olders and olders[-1].size > n:
        m = olders[-1].size
        detail = f"the export's checkpoint has size {n}, but the log signed size {m} before"
        raise AuditFailed("truncated", n, f"{detail}: entries {n}..{m - 1} were cut off")


def finish(
    cp_line: str,
    it: Iterator[str],
    st: State,
    header: ExportHeader,
    olders: list[Checkpoint],
    verifier: Verifier,
) -> AuditReport:
    """Steps 4-6 of :func:`audit_export`, once every entry line was folded into ``st``."""
    # 4. The checkpoint is signed by the log key and is the one the header announced.
    total = header.size
    cp = _read_checkpoint(cp_line, it, st.size, verifier)
    if cp.size != total:
        raise malformed(None, f"the header says size {total}, the checkpoint {cp.size}")
    # 5. The export holds exactly the entries the checkpoint commits to.
    if st.size < cp.size:
        detail = f"the checkpoint commits to {cp.size} entries, the export stops at {st.size}"
        raise AuditFailed("missing", st.size, detail)
    if st.size > cp.size:
        raise malformed(cp.size, f"the export holds entries beyond the checkpoint ({cp.size})")
    # 6. They hash to its root, extend every kept checkpoint, and the log did not shrink.
    _check_history(cp, st, olders)
    return AuditReport(cp.origin, header.node, cp, tuple(olders), len(st.seen))
