"""Offline audit of a ledger export (``certex audit verify``): pure and streaming.

:func:`audit_export` proves, from an export (:mod:`.export`), the node's verifier key and
checkpoints an auditor kept, that the export holds exactly the entries the node signed, in
one hash chain with correct subject back-pointers, and that the log only grew since; or it
raises :class:`AuditFailed` with the first bad index and the problem. Locating a change:
each leaf commits to its predecessor (``prev``), so editing entry k breaks the link k -> k+1
only (if the next link breaks too, entry k+1 itself changed); the last entry has no
successor, so its edit shows only in the signed root. A leaf whose own ``index`` is not its
position was ``reordered`` (it turns up later) or entries are ``missing``. A signed
checkpoint smaller than a kept one means ``truncated``. A valid, signed export whose first
m entries miss the root of a kept checkpoint of size m is ``forked`` (only the key holder
can do that); one root cannot say which entry changed, so the report gives the range above
the largest kept checkpoint that still matches. The index reported is the lowest of the
fewest changed entries that explain what is seen; a run re-chained end to end looks like
one change at its end, bounded below by the kept checkpoints.
"""

from __future__ import annotations

import binascii
import codecs
import collections
import gc
import hmac
import io
import itertools
import multiprocessing
import multiprocessing.pool
import os
import re
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
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
from exchange.ledger.merkle import EMPTY_ROOT, HashSource, RootBuilder
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
class _State:
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


def _malformed(index: int | None, detail: str) -> AuditFailed:
    return AuditFailed("malformed", index, detail)


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


def _read_header(line: str | None, verifier: Verifier) -> ExportHeader:
    """The header, once it names the log this key speaks for."""
    if line is None:
        raise _malformed(None, "the export is empty")
    try:
        header = read_header(line)
    except InvalidInput as e:
        raise _malformed(None, e.detail) from e
    if header.origin != verifier.name:
        detail = f"the export is from log {header.origin!r}, the key is for {verifier.name!r}"
        raise AuditFailed("bad-signature", None, detail)
    return header


def _parse_entry(line: str, position: int) -> _Entry:
    """One entry line, read carefully: line problems raise, leaf problems are recorded."""
    try:
        _, raw = read_entry_line(line)
    except InvalidInput as e:
        raise _malformed(position, f"entry line {position}: {e.detail}") from e
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
            return _parse_entry(line, position).leaf
    return None


def _find_index(rest: Iterator[str], wanted: int, position: int) -> int | None:
    """The position, from ``position`` on, of a leaf that says it is entry ``wanted``."""
    for pos, line in enumerate(rest, position):
        with suppress(ValueError, TypeError, KeyError):
            found = orjson.loads(binascii.a2b_base64(orjson.loads(line)["leaf"]))["index"]
            if type(found) is int and found == wanted:
                return pos
    return None


def _diagnose(e: _Entry, f: int, st: _State, rest: Iterator[str]) -> NoReturn:
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


def _fast(it: Iterator[str], st: _State, total: int, progress: Progress) -> str | None:  # noqa: PLR0912  one flat hot loop
    """Fold entries while all checks pass at once; return the first line that does not.

    What this accepts, :func:`_parse_entry` (``decode_leaf``) accepts too; anything unusual
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


def _stream(it: Iterator[str], st: _State, total: int, progress: Progress) -> str:
    """Check every entry line; return the checkpoint line that follows them."""
    while (line := _fast(it, st, total, progress)) is not None:
        if is_checkpoint_line(line):
            return line
        e = _parse_entry(line, st.size)
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
    raise _malformed(st.size, "the export ends without a checkpoint line")


def _read_checkpoint(line: str, it: Iterator[str], position: int, verifier: Verifier) -> Checkpoint:
    try:
        note = read_checkpoint_line(line)
    except InvalidInput as e:
        raise _malformed(position, e.detail) from e
    if any(extra.strip() for extra in it):
        raise _malformed(None, "the export goes on after the checkpoint line")
    try:
        return open_checkpoint(note, verifier)
    except VerificationFailed as e:
        detail = f"the checkpoint does not verify: {e.detail}"
        raise AuditFailed("bad-signature", None, detail) from e


def _check_history(cp: Checkpoint, st: _State, olders: list[Checkpoint]) -> None:
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
            raise _malformed(None, "the checkpoint of size 0 does not carry the empty root")
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


def _finish(
    cp_line: str,
    it: Iterator[str],
    st: _State,
    header: ExportHeader,
    olders: list[Checkpoint],
    verifier: Verifier,
) -> AuditReport:
    """Steps 4-6 of :func:`audit_export`, once every entry line was folded into ``st``."""
    # 4. The checkpoint is signed by the log key and is the one the header announced.
    total = header.size
    cp = _read_checkpoint(cp_line, it, st.size, verifier)
    if cp.size != total:
        raise _malformed(None, f"the header says size {total}, the checkpoint {cp.size}")
    # 5. The export holds exactly the entries the checkpoint commits to.
    if st.size < cp.size:
        detail = f"the checkpoint commits to {cp.size} entries, the export stops at {st.size}"
        raise AuditFailed("missing", st.size, detail)
    if st.size > cp.size:
        raise _malformed(cp.size, f"the export holds entries beyond the checkpoint ({cp.size})")
    # 6. They hash to its root, extend every kept checkpoint, and the log did not shrink.
    _check_history(cp, st, olders)
    return AuditReport(cp.origin, header.node, cp, tuple(olders), len(st.seen))


def audit_export(
    lines: Iterable[str],
    *,
    verifier: Verifier,
    older_checkpoint: str | Sequence[str] | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> AuditReport:
    """Verify an export line by line; raise :class:`AuditFailed` at the first bad index.

    ``older_checkpoint`` is one or more signed checkpoint notes the auditor kept from
    earlier. Memory is O(log n) for the tree plus one slot per distinct subject.

    A regular file opened in text mode (UTF-8, strict errors, not read from yet) is read
    as bytes instead (:func:`_audit_file`): in blocks, and for exports of at least
    :data:`PARALLEL_MIN_ENTRIES` entries by ``workers`` processes (default: one per
    usable core; ``workers=1`` never starts a process, any other number always does).
    The result, and the first bad index and problem on failure, are the same either way.
    """
    # 1. The auditor's own kept checkpoints verify with the log key.
    olders = _open_older(older_checkpoint, verifier)
    report = progress or (lambda done, total: None)
    fd = _regular_file(lines)
    if fd is not None:
        return _audit_file(fd, verifier, olders, report, workers)
    # 2. The header names the log this key speaks for.
    it = iter(lines)
    header = _read_header(next(it, None), verifier)
    total = header.size
    # 3. Every entry: a canonical leaf at its position, chained, with a right back-pointer.
    st = _State(snap_sizes=sorted({c.size for c in olders if c.size > 0}))
    report(0, total)
    cp_line = _stream(it, st, total, report)
    report(st.size, total)
    return _finish(cp_line, it, st, header, olders, verifier)


# -- exports in a file: bytes, blocks, processes ------------------------------------------------
#
# The body of the file (the lines after the header) is cut into byte ranges at line ends.
# Each range is scanned on its own (:func:`_scan_range`, in a worker process or inline):
# it accepts a run of entries that pass every check that can be made inside the range,
# assuming its first entry sits where that entry says it does, and stops at the first line
# it does not accept. The parent stitches ranges in order, checking what the range could
# not: that the first entry really is at that position and chains onto the hash before
# it, and that each subject's first back-pointer in the range points at that subject's
# last entry before it. At the first range that does not stitch, or the first line a
# range did not accept (normally the checkpoint line), the sequential audit above takes
# over from that byte with exactly the state it would have had there, so the problem
# reported and its index are the ones the sequential audit reports. Inside a range, lines
# are checked a block at a time (:meth:`_Scanner.bulk`: one split, one base64 decode of
# the whole block where :func:`_decoder` may be used, one regex pass over the leaves); a
# block that does not pass whole is taken line by line.

PARALLEL_MIN_ENTRIES = 50_000
"""Exports announcing fewer entries are scanned in this process (no pool to start)."""
CHUNK_BYTES = 32 << 20
"""Largest byte range one worker scans at a time (smaller ones balance two cores)."""
BLOCK_BYTES = 1 << 18
"""Entry lines checked together by the bulk path (bigger: fewer calls; but 1 MiB blocks
measured ~6% slower than 256 KiB ones, the buffers of a block no longer stay in cache)."""

_NULL: Final = b"null"
_STORED_INDEXES: Final = re.compile(rb"(?::(?:0|[1-9][0-9]{0,17}),)+").fullmatch
_STR, _OPT = rb'"[^"]*"', rb'(?:null|"[^"]*")'
_NAT, _INT = rb"(?:0|[1-9][0-9]{0,17})", rb"(?:0|-?[1-9][0-9]{0,17})"
_LEAF_LINE: Final = re.compile(
    rb'^\{"actor":' + _STR + rb',"certificate":' + _OPT + rb',"consent":' + _OPT
    + rb',"index":(' + _NAT + rb'),"item":' + _OPT + rb',"kind":' + _STR + rb',"node":' + _STR
    + rb',"outcome":' + _STR + rb',"prev":"([^"]{64})","prev_subject":(null|' + _NAT
    + rb'),"reason":' + _OPT + rb',"request_sha256":' + _OPT
    + rb',"subject":(?:null|"([^"]{64})"),"time_ms":' + _INT + rb',"v":1\}$',
    re.M,
)
"""A canonical leaf whose values are plain strings, nulls and small integers.

With no backslash, control character, DEL or non-ASCII byte in it (checked separately),
every string is written as orjson writes it and every integer fits 64 bits, so a match
is exactly what ``decode_leaf`` accepts of this shape; ``prev`` is then compared with
the previous hash's hex and a subject is checked to be a pseudonym when first met.
"""
_NOT_PLAIN: Final = bytes(range(0x20)) + b"\\\x7f"
_PSEUDONYM_BYTES: Final = re.compile(rb"[0-9a-f]{64}").fullmatch
_Pieces = list[tuple[int, bytes]]  # aligned perfect subtrees (level, hash), left to right


_MANY: list[Callable[[bytes], list[bytes]] | None] = []  # _decoder's, once it is made


def _decoder() -> Callable[[bytes], list[bytes]] | None:
    """pydantic-core's base64 decoder (Rust, ~3x binascii's speed): a JSON array of
    strings to a list of bytes in one call. It takes standard and URL-safe base64 with or
    without padding, so the caller leaves it only strings of a length divisible by 4 with
    no ``-``, ``_`` or backslash (a JSON escape); it refuses non-zero unused bits, which
    strict ``a2b_base64`` allows, so what it refuses goes to a2b. None: not usable here."""
    if not _MANY:
        _MANY.append(None)
        with suppress(Exception):  # not installed, too old (no val_json_bytes), changed
            from pydantic_core import SchemaValidator, core_schema

            schema = core_schema.list_schema(core_schema.bytes_schema())
            many = SchemaValidator(schema, {"val_json_bytes": "base64"}).validate_json
            if many(b'["QUJD","QUI=","QQ==",""]') == [b"ABC", b"AB", b"A", b""] and all(
                _refuses(many, bad) for bad in (b"QQ=A", b"=QQQ", b"Q===", b"QQ==QUJD", b"Q*==")
            ):
                _MANY[0] = many
    return _MANY[0]


def _refuses(many: Callable[[bytes], list[bytes]], b64: bytes) -> bool:
    try:
        many(b'["' + b64 + b'"]')
    except ValueError:
        return True
    return False


@dataclass(slots=True)
class _Range:
    """What a scan proved about the entry lines of one byte range (see the comment above)."""

    start: int = 0  # the index the first entry claims; its position, once stitched
    prev0: bytes = b""  # hex of the first entry's prev
    count: int = 0  # entries accepted
    last: bytes = b""  # the last accepted entry's leaf hash
    seen: dict[bytes, bytes] = field(default_factory=dict)  # subject -> its last index here
    first: dict[bytes, bytes] = field(default_factory=dict)  # subject -> first prev_subject
    pieces: _Pieces = field(default_factory=list)  # the tree over [start, start + count)
    snaps: dict[int, _Pieces] = field(default_factory=dict)  # kept size -> [start, size)
    stop: int | None = None  # file offset of the first line not accepted


class _Scanner:
    """Accepts entry lines in order for one range; holds what :class:`_Range` reports."""

    def __init__(self) -> None:
        self.r = _Range()
        self.many = _decoder()
        self.prev_hex = b""
        self.lines_in_block = 0
        self.hashes: list[bytes] = []

    def bulk(self, buf: bytes, p: int, q: int) -> int:  # noqa: PLR0911, PLR0912  flat checks
        """Accept the lines in buf[p:q] (each ending in a newline) at once, if they all
        take the plain path; return how many of the first lines were accepted."""
        # Split at quotes, the lines are {"index":N,"leaf":"B64"} exactly when every sixth
        # part is the same piece of that template and the N are decimal numbers.
        parts = (buf if p == 0 and q == len(buf) else buf[p:q]).split(b'"')
        k = len(parts) // 6
        if not (
            k
            and len(parts) == 6 * k + 1
            and parts[0] == b"{"
            and parts[-1] == b"}\n"
            and parts[1::6].count(b"index") == k
            and parts[3::6].count(b"leaf") == k
            and parts[4::6].count(b":") == k
            and parts[6:-1:6].count(b"}\n{") == k - 1
            and _STORED_INDEXES(b"".join(parts[2::6]))
        ):
            return 0
        self.lines_in_block = k
        b64s = parts[5::6]
        raws = self.decode(b64s)
        if raws is None:
            return 0
        joined = b"\n".join(raws)
        # Only the k - 1 newlines between leaves may go: no control character, DEL, backslash.
        plain = len(joined.translate(None, _NOT_PLAIN)) == len(joined) - k + 1
        if not plain or not joined.isascii():
            return 0
        rows = _LEAF_LINE.findall(joined)
        if len(rows) != k:
            return 0
        idxs, prevs, ptrs, subjects = zip(*rows, strict=True)
        r = self.r
        if r.count:
            start, prev_hex = r.start + r.count, self.prev_hex
        else:
            start, prev_hex = int(idxs[0]), prevs[0]
        if list(map(int, idxs)) != list(range(start, start + k)):
            return 0
        digest, zero = sha256, b"\x00"
        hashes = [digest(zero + raw).digest() for raw in raws]
        hexes = tuple(map(binascii.hexlify, hashes))
        if prevs[0] != prev_hex or prevs[1:] != hexes[:-1]:
            return 0
        # Back-pointers, in order: the only check that needs one entry after another.
        seen, first, m = r.seen, r.first, 0
        get = seen.get
        for idx, s, ps in zip(idxs, subjects, ptrs, strict=True):
            if s:
                last = get(s)
                if last is None:
                    if not _PSEUDONYM_BYTES(s):
                        break
                    first[s] = ps
                elif last != ps:
                    break
                seen[s] = idx
            elif ps != _NULL:
                break
            m += 1
        if m:
            if not r.count:
                r.start, r.prev0 = start, prev_hex
            self.hashes += hashes[:m] if m < k else hashes
            r.count += m
            self.prev_hex = hexes[m - 1]
        return m

    def decode(self, b64s: list[bytes]) -> list[bytes] | None:
        """The leaves, decoded as strict base64 (None if one is not), in one call if it can."""
        many = self.many
        if many is not None and b64s and not any(map((3).__and__, map(len, b64s))):
            # Multiples of 4 with none of the characters _decoder leaves to the caller
            # (and no quote: they come from a split at quotes): what it decodes, strict a2b
            # decodes the same way; what it refuses, a2b judges, line by line.
            items = b64s[:]  # not b'["' + ... + b'"]': no copies of the whole block
            items[0] = b'["' + items[0]
            items[-1] += b'"]'
            array = b'","'.join(items)
            if b"\\" not in array and b"-" not in array and b"_" not in array:
                with suppress(ValueError):  # pydantic_core.ValidationError included
                    raws = many(array)
                    if len(raws) == len(b64s):
                        return raws
        a2b = binascii.a2b_base64
        try:
            return [a2b(x, strict_mode=True) for x in b64s]
        except binascii.Error:
            return None

    def careful(self, line: bytes) -> bool:  # noqa: PLR0911  one check per return
        """Accept one line (without its newline) read as the sequential audit reads it."""
        if line.endswith(b"\r"):  # a CRLF line end reads as one line end
            line = line[:-1]
        if b"\r" in line:  # a text reader would see two lines here
            return False
        r = self.r
        try:
            e = _parse_entry(line.decode("utf-8"), r.start + r.count)
        except (AuditFailed, UnicodeDecodeError):
            return False
        leaf = e.leaf
        if leaf is None:
            return False
        prev_hex = leaf.prev.hex().encode()
        if r.count and (leaf.index != r.start + r.count or prev_hex != self.prev_hex):
            return False
        ps = _NULL if leaf.prev_subject is None else b"%d" % leaf.prev_subject
        if leaf.subject is None:
            if ps != _NULL:
                return False
        else:
            s = leaf.subject.encode()
            last = r.seen.get(s)
            if last is None:
                r.first[s] = ps
            elif last != ps:
                return False
            r.seen[s] = b"%d" % leaf.index
        if not r.count:
            r.start, r.prev0 = leaf.index, prev_hex
        self.hashes.append(e.hash)
        r.count += 1
        self.prev_hex = binascii.hexlify(e.hash)
        return True

    def lines(self, buf: bytes, p: int, q: int) -> int | None:
        """Accept buf[p:q] line by line; the offset in buf of the first line refused."""
        while p < q:
            nl = buf.find(b"\n", p, q)
            end = q if nl < 0 else nl + 1
            if not self.bulk(buf, p, end) and not self.careful(buf[p : end - (nl >= 0)]):
                return p
            p = end
        return None


def _pread(fd: int, lo: int, hi: int) -> bytes:
    parts = []
    while lo < hi:
        part = os.pread(fd, hi - lo, lo)
        if not part:
            break
        parts.append(part)
        lo += len(part)
    return b"".join(parts)


def _scan_range(args: tuple[int, int, int, tuple[int, ...]]) -> _Range:
    """Scan the entry lines in bytes [lo, hi) of the file; see the comment above."""
    fd, lo, hi, kept = args
    collect = gc.isenabled()
    gc.disable()  # many short-lived tuples, no cycles: collections would only cost time
    try:
        return _scan(fd, lo, hi, kept)
    finally:
        if collect:
            gc.enable()


def _block(fd: int, at: int, hi: int) -> bytes:
    """The whole lines from ``at`` on, about :data:`BLOCK_BYTES` of them (at least one)."""
    buf = os.pread(fd, min(BLOCK_BYTES, hi - at), at)
    if at + len(buf) >= hi or not buf:
        return buf
    nl = buf.rfind(b"\n")
    return buf[: nl + 1] if nl >= 0 else _pread(fd, at, _line_end(fd, at, hi))


def _scan(fd: int, lo: int, hi: int, kept: tuple[int, ...]) -> _Range:
    sc, at = _Scanner(), lo
    while at < hi:
        buf = _block(fd, at, hi)  # read block by block: each is still in cache when checked
        if not buf:
            break
        m, end = sc.bulk(buf, 0, len(buf)), len(buf)
        if not m or m < sc.lines_in_block or not buf.endswith(b"\n"):
            p = 0
            for _ in range(m):  # the lines bulk accepted before the one it refused
                p = buf.index(b"\n", p) + 1
            stop = sc.lines(buf, p, end)
            if stop is not None:
                sc.r.stop = at + stop
                break
        at += end
    r = sc.r
    if r.count:
        r.last = sc.hashes[-1]
        levels = _levels(r.start, sc.hashes)
        r.pieces = _pieces(levels, r.start, r.start + r.count)
        for size in kept:
            if r.start < size <= r.start + r.count:
                r.snaps[size] = _pieces(levels, r.start, size)
    return r


def _levels(start: int, hashes: list[bytes]) -> list[tuple[int, list[bytes]]]:
    """Every complete aligned perfect subtree inside [start, start + len(hashes)), by level:
    ``(first, roots)``, where ``first`` is the first subtree's index at that level."""
    levels, row, first, digest, node = [], hashes, start, sha256, b"\x01"
    while row:
        levels.append((first, row))
        odd = first & 1
        pairs = iter(row[odd : odd + (len(row) - odd) // 2 * 2])
        row = [digest(node + lt + rt).digest() for lt, rt in zip(pairs, pairs, strict=False)]
        first = (first + odd) >> 1
    return levels


def _pieces(levels: list[tuple[int, list[bytes]]], lo: int, hi: int) -> _Pieces:
    """The aligned perfect subtrees that exactly cover [lo, hi), left to right."""
    left: _Pieces = []
    right: _Pieces = []
    level = 0
    while lo < hi:
        first, row = levels[level]
        if lo >> level & 1:
            left.append((level, row[(lo >> level) - first]))
            lo += 1 << level
        if hi >> level & 1 and lo < hi:
            right.append((level, row[(hi >> level) - 1 - first]))
            hi -= 1 << level
        level += 1
    return left + right[::-1]


def _push(stack: list[bytes], size: int, pieces: _Pieces) -> int:
    """Extend the tree [0, size), held as its binary decomposition, by aligned pieces."""
    digest, node = sha256, b"\x01"
    for level, piece in pieces:
        h, n = piece, size >> level
        while n & 1:  # as RootBuilder.append, one level up per trailing one bit
            h = digest(node + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        size += 1 << level
    return size


class _Frontier(HashSource):
    """The perfect subtrees of the binary decomposition of ``size``, for RootBuilder."""

    def __init__(self, stack: list[bytes], size: int) -> None:
        self.nodes, start = {}, 0
        levels = [lv for lv in range(size.bit_length() - 1, -1, -1) if size >> lv & 1]
        for level, h in zip(levels, stack, strict=True):
            self.nodes[level, start >> level] = h
            start += 1 << level

    def subtree(self, level: int, index: int) -> bytes:
        return self.nodes[level, index]


def _regular_file(lines: Iterable[str]) -> int | None:
    """The descriptor behind ``lines`` if it is a fresh UTF-8 text reader of a regular file."""
    if not isinstance(lines, io.TextIOWrapper):
        return None
    try:
        if codecs.lookup(lines.encoding).name != "utf-8" or lines.errors != "strict":
            return None
        if lines.tell() != 0:
            return None
        fd = lines.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, LookupError):  # io.UnsupportedOperation is an OSError
        return None


def _line_end(fd: int, at: int, size: int) -> int:
    """The offset just past the first newline at or after ``at`` (``size`` if none)."""
    while at < size:
        window = os.pread(fd, 1 << 16, at)
        nl = window.find(b"\n")
        if nl >= 0:
            return at + nl + 1
        if not window:
            break
        at += len(window)
    return size


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _audit_file(
    fd: int, verifier: Verifier, olders: list[Checkpoint], report: Progress, workers: int | None
) -> AuditReport:
    """:func:`audit_export` of a regular file, read as bytes; see the comment above."""
    size = os.fstat(fd).st_size
    body = _line_end(fd, 0, size)
    head = _pread(fd, 0, body)
    if b"\r" in head:  # not a line end a byte scan agrees on: read it all as text
        return _resume(fd, 0, None, None, verifier, olders, report)
    # 2. The header names the log this key speaks for.
    header = _read_header(head.decode("utf-8") if head else None, verifier)
    total = header.size
    report(0, total)
    # 3. Every entry, range by range; the sequential audit from the first thing that is off.
    kept = tuple(sorted({c.size for c in olders if c.size > 0}))
    if workers is None:
        workers = _usable_cores() if total >= PARALLEL_MIN_ENTRIES else 1
    cuts = [body]
    while cuts[-1] < size:  # ranges shrink towards the end: no worker waits long for another
        step = min(CHUNK_BYTES, max((size - cuts[-1]) // (workers * 4), 1 << 20))
        cuts.append(_line_end(fd, min(cuts[-1] + step, size) - 1, size))
    jobs = [(fd, lo, hi, kept) for lo, hi in itertools.pairwise(cuts)]
    state = _Stitched()
    _decoder()  # made once, before the workers fork
    if workers > 1 and len(jobs) > 1:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        procs = min(workers, len(jobs))
        with ctx.Pool(procs) as pool:
            ranges = _in_order(pool, jobs, 8 * procs)
            try:
                at = state.stitch(ranges, jobs, size, total, report)
            finally:
                ranges.close()  # before the pool is terminated: see _in_order
    else:
        at = state.stitch(map(_scan_range, jobs), jobs, size, total, report)
    return _resume(fd, at, header, state, verifier, olders, report)


def _in_order(
    pool: multiprocessing.pool.Pool, jobs: list[tuple[int, int, int, tuple[int, ...]]], window: int
) -> Generator[_Range, None, None]:
    """``pool.imap(_scan_range, jobs)`` with at most ``window`` jobs handed out at a time,
    and none still running once the caller stops early and closes this generator.

    ``imap`` queues every job at once; when the stitching stops at a bad range, leaving the
    ``with Pool`` terminates the pool while workers go on sending results nobody reads. A
    worker blocked on the full result pipe holds the result queue's lock, which terminate's
    own sentinel then waits for: the audit hung (seen once in 1,400 test runs). Here at most
    ``window`` results are ever in flight, and closing waits for them first."""
    pending: collections.deque[multiprocessing.pool.AsyncResult[_Range]] = collections.deque()
    todo = iter(jobs)
    try:
        for job in itertools.islice(todo, window):
            pending.append(pool.apply_async(_scan_range, (job,)))
        while pending:
            r = pending.popleft().get()
            for job in itertools.islice(todo, 1):
                pending.append(pool.apply_async(_scan_range, (job,)))
            yield r
    finally:
        for p in pending:
            p.wait()


@dataclass(slots=True)
class _Stitched:
    """The sequential audit's state after the ranges stitched so far."""

    size: int = 0
    prev_hex: bytes = GENESIS_PREV.encode()
    stack: list[bytes] = field(default_factory=list)
    seen: dict[bytes, bytes] = field(default_factory=dict)
    roots: dict[int, bytes] = field(default_factory=dict)

    def stitch(
        self,
        ranges: Iterable[_Range],
        jobs: list[tuple[int, int, int, tuple[int, ...]]],
        end: int,
        total: int,
        report: Progress,
    ) -> int:
        """Take ranges in order while they fit; the offset the sequential audit goes on at."""
        for r, (_, lo, _, _) in zip(ranges, jobs, strict=False):
            if r.count:
                get = self.seen.get
                if (
                    r.start != self.size
                    or r.prev0 != self.prev_hex
                    or any(get(s, _NULL) != ps for s, ps in r.first.items())
                ):
                    return lo
                for size, pieces in r.snaps.items():
                    stack = list(self.stack)
                    _push(stack, self.size, pieces)
                    self.roots[size] = _fold_stack(stack)
                self.size = _push(self.stack, self.size, r.pieces)
                self.prev_hex = binascii.hexlify(r.last)
                self.seen.update(r.seen)
                report(self.size, total)
            if r.stop is not None:
                return r.stop
        return end


def _fold_stack(stack: list[bytes]) -> bytes:
    """MTH of the tree whose binary decomposition is ``stack``, as RootBuilder.root."""
    if not stack:
        return EMPTY_ROOT
    acc = stack[-1]
    for h in reversed(stack[:-1]):
        acc = sha256(b"\x01" + h + acc).digest()
    return acc


def _resume(
    fd: int,
    at: int,
    header: ExportHeader | None,
    done: _Stitched | None,
    verifier: Verifier,
    olders: list[Checkpoint],
    report: Progress,
) -> AuditReport:
    """The sequential audit from byte ``at`` on, in the state ``done`` describes
    (``header`` None: from the start of the file, header included)."""
    kept = sorted({c.size for c in olders if c.size > 0})
    with io.TextIOWrapper(open(os.dup(fd), "rb"), encoding="utf-8") as text:
        text.buffer.seek(at)
        it = iter(text)
        if header is None or done is None:
            header = _read_header(next(it, None), verifier)
            report(0, header.size)
            st = _State(snap_sizes=kept)
        else:
            n = done.size
            st = _State(
                snap_sizes=[k for k in kept if k > n],
                size=n,
                prev=bytes.fromhex(done.prev_hex.decode()),
                builder=RootBuilder.from_source(n, _Frontier(done.stack, n)),
                seen={s.decode(): int(i) for s, i in done.seen.items()},
                roots=done.roots,
            )
        cp_line = _stream(it, st, header.size, report)
        report(st.size, header.size)
        return _finish(cp_line, it, st, header, olders, verifier)
