"""Auditing an export in a regular file (bytes, byte ranges, processes) or a byte stream.

The body of the file (the lines after the header) is cut into byte ranges at line ends.
Each range is scanned on its own (:func:`.scan.scan_range`, in a worker process or inline).
The parent stitches ranges in order, checking what a range could not: that its first entry
really is at that position and chains onto the hash before it, and that each subject's
first back-pointer in the range points at that subject's last entry before it. At the
first range that does not stitch, or the first line a range did not accept (normally the
checkpoint line), the sequential audit (:mod:`.stream`) takes over from that byte with
exactly the state it would have had there, so the problem reported and its index are the
ones the sequential audit reports.

A stream that can be read only once (a pipe, standard input) is read in blocks of whole
lines; each block is scanned in this process as a range of its own and stitched on at once,
so when one does not fit it is still in memory, and the sequential audit takes over from
there, reading the rest of the block and of the stream as a UTF-8 text reader would.
"""

from __future__ import annotations

import binascii
import codecs
import collections
import gc
import io
import itertools
import multiprocessing
import multiprocessing.pool
import os
import stat
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import IO

from exchange.ledger.audit import scan
from exchange.ledger.audit.b64block import decoder
from exchange.ledger.audit.scan import NULL, Pieces, Range, line_end, pread, scan_range
from exchange.ledger.audit.stream import (
    AuditReport,
    Progress,
    State,
    finish,
    header_of,
    stream_entries,
)
from exchange.ledger.checkpoint import Checkpoint
from exchange.ledger.export import ExportHeader
from exchange.ledger.leaf import GENESIS_PREV
from exchange.ledger.merkle import EMPTY_ROOT, HashSource, RootBuilder
from exchange.ledger.note import Verifier

PARALLEL_MIN_ENTRIES = 50_000
"""Exports announcing fewer entries are scanned in this process (no pool to start)."""
CHUNK_BYTES = 32 << 20
"""Largest byte range one worker scans at a time (smaller ones balance two cores)."""


def _push(stack: list[bytes], size: int, pieces: Pieces) -> int:
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


def regular_file(lines: Iterable[str]) -> int | None:
    """The descriptor behind ``lines`` if it is a fresh UTF-8 text reader of a regular file."""
    if not isinstance(lines, io.TextIOWrapper):
        return None
    try:
        if codecs.lookup(lines.encoding).name != "utf-8" or lines.errors != "strict":
            return None
        if lines.tell() != 0:
            return None
    except (OSError, ValueError, LookupError):  # io.UnsupportedOperation is an OSError
        return None
    return regular_binary(lines.buffer)


def regular_binary(stream: IO[bytes]) -> int | None:
    """The descriptor behind a binary ``stream`` if it is a regular file not read from yet."""
    try:
        if stream.tell() != 0:
            return None
        fd = stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):  # a pipe cannot tell; io.UnsupportedOperation is OSError
        return None


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def audit_file(
    fd: int, verifier: Verifier, olders: list[Checkpoint], report: Progress, workers: int | None
) -> AuditReport:
    """:func:`audit_export` of a regular file, read as bytes; see the comment above."""
    size = os.fstat(fd).st_size
    body = line_end(fd, 0, size)
    head = pread(fd, 0, body)
    if b"\r" in head:  # not a line end a byte scan agrees on: read it all as text
        with _reader(fd, 0) as text:
            return sequential(text, None, None, verifier, olders, report)
    # 2. The header names the log this key speaks for.
    header = header_of(head.decode("utf-8") if head else None, verifier)
    total = header.size
    report(0, total)
    # 3. Every entry, range by range; the sequential audit from the first thing that is off.
    kept = tuple(sorted({c.size for c in olders if c.size > 0}))
    if workers is None:
        workers = _usable_cores() if total >= PARALLEL_MIN_ENTRIES else 1
    cuts = [body]
    while cuts[-1] < size:  # ranges shrink towards the end: no worker waits long for another
        step = min(CHUNK_BYTES, max((size - cuts[-1]) // (workers * 4), 1 << 20))
        cuts.append(line_end(fd, min(cuts[-1] + step, size) - 1, size))
    jobs = [(fd, lo, hi, kept) for lo, hi in itertools.pairwise(cuts)]
    state = _Stitched()
    if scan.native is None:
        decoder()  # made once, before the workers fork
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
        at = state.stitch(map(scan_range, jobs), jobs, size, total, report)
    with _reader(fd, at) as text:
        return sequential(text, header, state, verifier, olders, report)


def _in_order(
    pool: multiprocessing.pool.Pool, jobs: list[tuple[int, int, int, tuple[int, ...]]], window: int
) -> Generator[Range, None, None]:
    """``pool.imap(scan_range, jobs)`` with at most ``window`` jobs handed out at a time,
    and none still running once the caller stops early and closes this generator.

    ``imap`` queues every job at once; when the stitching stops at a bad range, leaving the
    ``with Pool`` terminates the pool while workers go on sending results nobody reads. A
    worker blocked on the full result pipe holds the result queue's lock, which terminate's
    own sentinel then waits for: the audit hung (seen once in 1,400 test runs). Here at most
    ``window`` results are ever in flight, and closing waits for them first."""
    pending: collections.deque[multiprocessing.pool.AsyncResult[Range]] = collections.deque()
    todo = iter(jobs)
    try:
        for job in itertools.islice(todo, window):
            pending.append(pool.apply_async(scan_range, (job,)))
        while pending:
            r = pending.popleft().get()
            for job in itertools.islice(todo, 1):
                pending.append(pool.apply_async(scan_range, (job,)))
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
        ranges: Iterable[Range],
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
                    or any(get(s, NULL) != ps for s, ps in r.first.items())
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


def audit_stream(
    raw: IO[bytes], verifier: Verifier, olders: list[Checkpoint], report: Progress
) -> AuditReport:
    """:func:`audit_export` of a byte stream read once; see the comment above."""
    head = raw.readline()
    if b"\r" in head:  # not a line end a byte scan agrees on: read it all as text
        return sequential(_text(head, raw), None, None, verifier, olders, report)
    header = header_of(head.decode("utf-8") if head else None, verifier)
    total = header.size
    report(0, total)
    kept = tuple(sorted({c.size for c in olders if c.size > 0}))
    state, pending, rest = _Stitched(), b"", b""
    collect = gc.isenabled()
    gc.disable()  # as in scan_range: many short-lived objects, no cycles
    try:
        while chunk := raw.read(scan.BLOCK_BYTES):
            buf = pending + chunk if pending else chunk
            nl = buf.rfind(b"\n")
            if nl < 0:
                pending = buf
                continue
            block, pending = buf[: nl + 1], buf[nl + 1 :]
            r = scan.scan_buffer(block, kept)
            at = state.stitch([r], [(-1, 0, len(block), kept)], len(block), total, report)
            if at < len(block):
                rest = block[at:]
                break
    finally:
        if collect:
            gc.enable()
    return sequential(_text(rest + pending, raw), header, state, verifier, olders, report)


class _Chained(io.RawIOBase):
    """``first``, then whatever ``rest`` still holds: the stream from where a scan stopped."""

    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self._first = memoryview(first)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._first:
            n = min(len(b), len(self._first))
            b[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        data = self._rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def _text(first: bytes, rest: IO[bytes]) -> io.TextIOWrapper:
    """The lines a UTF-8 text reader of the whole stream would read from here on."""
    return io.TextIOWrapper(io.BufferedReader(_Chained(first, rest)), encoding="utf-8")


def _reader(fd: int, at: int) -> io.TextIOWrapper:
    """The file's lines from byte ``at`` on, as a UTF-8 text reader reads them (its own
    descriptor: closing it leaves ``fd`` open)."""
    text = io.TextIOWrapper(open(os.dup(fd), "rb"), encoding="utf-8")  # noqa: SIM115  callers close it
    text.buffer.seek(at)
    return text


def sequential(
    text: Iterable[str],
    header: ExportHeader | None,
    done: _Stitched | None,
    verifier: Verifier,
    olders: list[Checkpoint],
    report: Progress,
) -> AuditReport:
    """The sequential audit of the lines ``text``, in the state ``done`` describes
    (``header`` None: from the start of the export, header included)."""
    kept = sorted({c.size for c in olders if c.size > 0})
    it = iter(text)
    if header is None or done is None:
        header = header_of(next(it, None), verifier)
        report(0, header.size)
        st = State(snap_sizes=kept)
    else:
        n = done.size
        st = State(
            snap_sizes=[k for k in kept if k > n],
            size=n,
            prev=bytes.fromhex(done.prev_hex.decode()),
            builder=RootBuilder.from_source(n, _Frontier(done.stack, n)),
            seen={s.decode(): int(i) for s, i in done.seen.items()},
            roots=done.roots,
        )
    cp_line = stream_entries(it, st, header.size, report)
    report(st.size, header.size)
    return finish(cp_line, it, st, header, olders, verifier)
