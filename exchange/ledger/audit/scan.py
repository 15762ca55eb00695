"""Scanning a byte range of an export file: the parallel audit's worker.

A range is scanned on its own: it accepts a run of entries that pass every check that can
be made inside the range, assuming its first entry sits where that entry says it does, and
stops at the first line it does not accept (:class:`Range` says what it proved; :mod:`.files`
stitches ranges and checks the rest). Inside a range, lines are checked a block at a time
(:meth:`Scanner.bulk`: one split, one base64 decode of the whole block where
:func:`decoder` may be used, one regex pass over the leaves); a block that does not pass
whole is taken line by line, as the sequential audit reads it (:meth:`Scanner.careful`).

Where the optional C accelerator ``_native`` is built (``setup.py``), the plain path and
the subtree levels run there instead: it accepts, line by line, exactly the lines
:meth:`Scanner.bulk` accepts (it refuses base64 with non-zero unused bits, which the
careful path then judges), about three times faster. This module stays the reference:
``CERTEX_AUDIT_NATIVE=0`` runs it alone, and the tests run every case both ways.
"""

from __future__ import annotations

import binascii
import gc
import os
import re
from contextlib import suppress
from dataclasses import dataclass, field
from hashlib import sha256
from types import ModuleType
from typing import Final

from exchange.ledger.audit.b64block import decoder
from exchange.ledger.audit.stream import AuditFailed, parse_entry

BLOCK_BYTES = 1 << 18
"""Entry lines checked together by the bulk path (bigger: fewer calls; but 1 MiB blocks
measured ~6% slower than 256 KiB ones, the buffers of a block no longer stay in cache)."""
NULL: Final = b"null"
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
_HEX64: Final = re.compile(rb"[0-9a-f]{64}").fullmatch  # a pseudonym, or a hash as a leaf holds it
Pieces = list[tuple[int, bytes]]  # aligned perfect subtrees (level, hash), left to right
HASH: Final = 32


def _load_native() -> ModuleType | None:
    if os.environ.get("CERTEX_AUDIT_NATIVE", "1") == "0":
        return None
    try:
        from exchange.ledger.audit import _native
    except ImportError:  # not built here (no compiler or no OpenSSL headers)
        return None
    return _native


native: ModuleType | None = _load_native()
"""The C scanner, or None: the pure-Python one. Each Scanner takes it when made (tests
switch it)."""


@dataclass(slots=True)
class Range:
    """What a scan proved about the entry lines of one byte range (see the comment above)."""

    start: int = 0  # the index the first entry claims; its position, once stitched
    prev0: bytes = b""  # hex of the first entry's prev
    count: int = 0  # entries accepted
    last: bytes = b""  # the last accepted entry's leaf hash
    seen: dict[bytes, bytes] = field(default_factory=dict)  # subject -> its last index here
    first: dict[bytes, bytes] = field(default_factory=dict)  # subject -> first prev_subject
    pieces: Pieces = field(default_factory=list)  # the tree over [start, start + count)
    snaps: dict[int, Pieces] = field(default_factory=dict)  # kept size -> [start, size)
    stop: int | None = None  # file offset of the first line not accepted


class Scanner:
    """Accepts entry lines in order for one range; holds what :class:`Range` reports."""

    def __init__(self) -> None:
        self.r = Range()
        self.native = native
        self.many = None if self.native else decoder()
        self.prev_hex = b""
        self.lines_in_block = 0
        self.hashes = bytearray()  # the accepted entries' leaf hashes, 32 bytes each

    def bulk(self, buf: bytes, p: int, q: int) -> int:
        """Accept the first lines in buf[p:q] (each ending in a newline) that take the
        plain path; return the offset just past them (``p``: none was accepted)."""
        if self.native is None:
            m = self.bulk_py(buf, p, q)
            if not m:
                return p
            if m == self.lines_in_block and buf.endswith(b"\n", p, q):
                return q
            for _ in range(m):  # the lines accepted before the one refused
                p = buf.index(b"\n", p) + 1
            return p
        r = self.r
        if r.count:
            expect, prev = r.start + r.count, bytes(self.hashes[-HASH:])
        else:
            expect, prev = -1, b""
        m, start, prev0, end = self.native.bulk(
            buf, p, q, expect, prev, r.seen, r.first, self.hashes
        )
        if m:
            if not r.count:
                r.start, r.prev0 = start, prev0
            r.count += m
            self.prev_hex = binascii.hexlify(self.hashes[-HASH:])
        return int(end)

    def bulk_py(self, buf: bytes, p: int, q: int) -> int:  # noqa: PLR0911, PLR0912  flat checks
        """:meth:`bulk` in Python: all the lines at once if they all take the plain path,
        or none (the reference the C scanner follows line by line)."""
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
        else:  # the range's first prev is checked when ranges are stitched; hex as decode_leaf
            start, prev_hex = int(idxs[0]), prevs[0]
            if not _HEX64(prev_hex):
                return 0
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
                if last is None:  # (a later one points at an earlier index: see the else)
                    if not _HEX64(s) or (ps != NULL and int(ps) >= int(idx)):
                        break
                    first[s] = ps
                elif last != ps:
                    break
                seen[s] = idx
            elif ps != NULL:
                break
            m += 1
        if m:
            if not r.count:
                r.start, r.prev0 = start, prev_hex
            self.hashes += b"".join(hashes[:m] if m < k else hashes)
            r.count += m
            self.prev_hex = hexes[m - 1]
        return m

    def decode(self, b64s: list[bytes]) -> list[bytes] | None:
        """The leaves, decoded as strict base64 (None if one is not), in one call if it can."""
        many = self.many
        if many is not None and b64s and not any(map((3).__and__, map(len, b64s))):
            # Multiples of 4 with none of the characters decoder leaves to the caller
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
            e = parse_entry(line.decode("utf-8"), r.start + r.count)
        except (AuditFailed, UnicodeDecodeError):
            return False
        leaf = e.leaf
        if leaf is None:
            return False
        prev_hex = leaf.prev.hex().encode()
        if r.count and (leaf.index != r.start + r.count or prev_hex != self.prev_hex):
            return False
        ps = NULL if leaf.prev_subject is None else b"%d" % leaf.prev_subject
        if leaf.subject is None:
            if ps != NULL:
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
        self.hashes += e.hash
        r.count += 1
        self.prev_hex = binascii.hexlify(e.hash)
        return True

    def lines(self, buf: bytes, p: int, q: int) -> int | None:
        """Accept buf[p:q] line by line; the offset in buf of the first line refused."""
        while p < q:
            nl = buf.find(b"\n", p, q)
            end = q if nl < 0 else nl + 1
            if self.bulk(buf, p, end) == p and not self.careful(buf[p : end - (nl >= 0)]):
                return p
            p = end
        return None


def pread(fd: int, lo: int, hi: int) -> bytes:
    parts = []
    while lo < hi:
        part = os.pread(fd, hi - lo, lo)
        if not part:
            break
        parts.append(part)
        lo += len(part)
    return b"".join(parts)


def line_end(fd: int, at: int, size: int) -> int:
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


def scan_range(args: tuple[int, int, int, tuple[int, ...]]) -> Range:
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
    return buf[: nl + 1] if nl >= 0 else pread(fd, at, line_end(fd, at, hi))


def _scan(fd: int, lo: int, hi: int, kept: tuple[int, ...]) -> Range:
    sc, at = Scanner(), lo
    while at < hi:
        buf = _block(fd, at, hi)  # read block by block: each is still in cache when checked
        if not buf:
            break
        stop = _take(sc, buf)
        if stop is not None:
            sc.r.stop = at + stop
            break
        at += len(buf)
    return _finish(sc, kept)


def scan_buffer(buf: bytes, kept: tuple[int, ...]) -> Range:
    """Scan the entry lines in ``buf`` as a range of their own (a block of a stream);
    ``stop`` is then an offset in ``buf``."""
    sc = Scanner()
    sc.r.stop = _take(sc, buf)
    return _finish(sc, kept)


def _take(sc: Scanner, buf: bytes) -> int | None:
    """Accept the lines of ``buf``; the offset of the first one refused, if one is."""
    end = len(buf)
    p = sc.bulk(buf, 0, end)
    if p < end:  # a line bulk did not accept (or the last, with no newline)
        return sc.lines(buf, p, end)
    return None


def _finish(sc: Scanner, kept: tuple[int, ...]) -> Range:
    r = sc.r
    if r.count:
        r.last = bytes(sc.hashes[-HASH:])
        levels = _levels(r.start, sc.hashes, sc.native)
        r.pieces = _pieces(levels, r.start, r.start + r.count)
        for size in kept:
            if r.start < size <= r.start + r.count:
                r.snaps[size] = _pieces(levels, r.start, size)
    return r


def _levels(
    start: int, hashes: bytes | bytearray, c_scanner: ModuleType | None
) -> list[tuple[int, bytes]]:
    """Every complete aligned perfect subtree inside [start, start + len(hashes) // 32), by
    level: ``(first, roots)``, where ``first`` is the first subtree's index at that level
    and ``roots`` their hashes, 32 bytes each, one after another (in C where
    ``c_scanner`` is the scanner's C module)."""
    if c_scanner is not None:
        return c_scanner.levels(start, hashes)  # type: ignore[no-any-return]
    levels, first, digest, node = [], start, sha256, b"\x01"
    row = [bytes(hashes[i : i + HASH]) for i in range(0, len(hashes), HASH)]
    while row:
        levels.append((first, b"".join(row)))
        odd = first & 1
        pairs = iter(row[odd : odd + (len(row) - odd) // 2 * 2])
        row = [digest(node + lt + rt).digest() for lt, rt in zip(pairs, pairs, strict=False)]
        first = (first + odd) >> 1
    return levels


def _pieces(levels: list[tuple[int, bytes]], lo: int, hi: int) -> Pieces:
    """The aligned perfect subtrees that exactly cover [lo, hi), left to right."""
    left: Pieces = []
    right: Pieces = []
    level = 0
    while lo < hi:
        first, row = levels[level]
        if lo >> level & 1:
            at = ((lo >> level) - first) * HASH
            left.append((level, row[at : at + HASH]))
            lo += 1 << level
        if hi >> level & 1 and lo < hi:
            at = ((hi >> level) - 1 - first) * HASH
            right.append((level, row[at : at + HASH]))
            hi -= 1 << level
        level += 1
    return left + right[::-1]
