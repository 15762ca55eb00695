"""The audit's C scanner (``exchange.ledger.audit._native``) against the Python reference.

The C scanner is an accelerator: over any sequence of lines, a scanner using it must end
in exactly the state the Python scanner ends in (what was accepted, the chain, the subject
back-pointers, the leaf hashes, where it stopped), and it must take the plain lines of a
real export on its fast path. tests/test_ledger_audit_parallel.py runs every whole-file
case with both scanners as well.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from exchange.ledger.audit import scan
from exchange.ledger.export import entry_line
from tests.helpers import assert_built_where_it_can_be
from tests.test_ledger_audit import SUBJECTS, _chain

NATIVE = scan.native
needs_native = pytest.mark.skipif(NATIVE is None, reason="the C scanner is not built here")


def test_the_c_scanner_is_built_where_it_can_be() -> None:
    """``make install`` builds it wherever it can; without it the audit is 2-3x slower."""
    assert_built_where_it_can_be(NATIVE, "CERTEX_AUDIT_NATIVE", "the C scanner")


def _state(sc: scan.Scanner) -> tuple[Any, ...]:
    r = sc.r
    return (r.start, r.prev0, r.count, r.seen, r.first, bytes(sc.hashes), sc.prev_hex)


def _scan_lines(lines: list[bytes], native: Any) -> tuple[tuple[Any, ...], int | None, int]:
    """Scan ``lines`` one block; the final state, where it stopped, lines the bulk path took."""
    saved = scan.native
    scan.native = native
    try:
        sc = scan.Scanner()
        buf = b"".join(lines)
        fast = 0
        p = 0
        while p < len(buf):  # as _scan and Scanner.lines do, counting the bulk path's lines
            q = sc.bulk(buf, p, len(buf))
            fast += buf.count(b"\n", p, q)
            if q < len(buf):
                nl = buf.find(b"\n", q)
                end = len(buf) if nl < 0 else nl + 1
                if not sc.careful(buf[q : end - (nl >= 0)]):
                    return _state(sc), q, fast
                q = end
            p = q
        return _state(sc), None, fast
    finally:
        scan.native = saved


def _entry(i: int, leaf: bytes) -> bytes:
    return entry_line(i, leaf).encode()


@needs_native
def test_plain_lines_take_the_fast_path_and_match_python() -> None:
    leaves = _chain(50)
    lines = [_entry(i, x) for i, x in enumerate(leaves)]
    native, stop, fast = _scan_lines(lines, NATIVE)
    python, py_stop, _ = _scan_lines(lines, None)
    assert native == python and stop is py_stop is None
    assert fast == 50  # every line through C
    assert native[2] == 50 and len(native[5]) == 50 * 32


_TEXT = st.text(
    st.sampled_from(['"', "\\", "\n", "\t", "\x7f", "é", "核", "a", "Z", "0", " ", "{", "}", ","]),
    max_size=6,
)
_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "actor": st.one_of(_TEXT, st.none(), st.integers(-3, 3)),
        "reason": st.one_of(_TEXT, st.none()),
        "item": st.one_of(_TEXT, st.none(), st.just([1])),
        "subject": st.one_of(st.sampled_from(SUBJECTS), st.none(), st.just("AB" * 32),
                             st.just("ab" * 31)),
        "prev_subject": st.one_of(st.none(), st.integers(-1, 60), st.just(10**19)),
        "index": st.integers(-1, 60),
        "time_ms": st.one_of(st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                             st.just(True)),
        "v": st.one_of(st.just(1), st.just(2), st.just(True)),
        "prev": st.one_of(st.just("00" * 32), st.just("zz" * 32)),
    },
)


# Byte changes inside a leaf a canonical encoder never makes, or makes (raw UTF-8): escapes
# JSON reads as the same string, raw control bytes, DEL, signs and leading zeros.
_SUBS = [
    (b'"bank"', b'"b\\u0061nk"'),
    (b'"bank"', b'"b\\/ank"'),
    (b'"bank"', b'"b\\\\ank"'),
    (b'"bank"', b'"b\tank"'),
    (b'"bank"', b'"b\x7fank"'),
    (b'"bank"', b'"b\xc3\xa9nk"'),
    (b'"pull"', b'"p\\"ull"'),
    (b'"31"', b'"3\\u0031"'),
    (b':null,', b':nul,'),
    (b'"v":1}', b'"v":01}'),
    (b'"v":1}', b'"v":1 }'),
    (b'"time_ms":', b'"time_ms":-'),
    (b'"time_ms":', b'"time_ms":0'),
    (b'"time_ms":', b'"time_ms":1234567890123456789'),
    (b'"index":', b'"index":0'),
    (b'"prev_subject":', b'"prev_subject":1'),
]


@needs_native
@hypothesis_settings(max_examples=400, deadline=None)
@given(
    tweaks=st.dictionaries(st.integers(0, 29), _FIELDS, max_size=4),
    byte_edits=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 10**6), st.integers(0, 255)),
                        max_size=2),
    leaf_edits=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 10**6), st.integers(0, 255)),
                        max_size=2),
    subs=st.lists(st.tuples(st.integers(0, 29), st.sampled_from(_SUBS)), max_size=2),
    cut=st.integers(0, 30),
)
def test_any_lines_end_in_the_state_python_ends_in(  # type: ignore[no-untyped-def]
    tweaks, byte_edits, leaf_edits, subs, cut
) -> None:
    """Changed fields, bytes of a line or of a leaf (re-encoded), a missing line end: the C
    scanner accepts exactly the lines the Python one does and ends in the same state."""
    leaves = _chain(30, tweaks)
    for k, (old, new) in subs:
        leaves[k] = leaves[k].replace(old, new, 1)
    for k, at, byte in leaf_edits:
        leaf = bytearray(leaves[k])
        leaf[at % len(leaf)] = byte
        leaves[k] = bytes(leaf)
    lines = [_entry(i, x) for i, x in enumerate(leaves)]
    for k, at, byte in byte_edits:
        line = bytearray(lines[k])
        line[at % len(line)] = byte
        lines[k] = bytes(line)
    if cut < len(lines):
        lines[cut] = lines[cut].rstrip(b"\n")
        lines = lines[: cut + 1]
    native, stop, _ = _scan_lines(lines, NATIVE)
    python, py_stop, _ = _scan_lines(lines, None)
    assert native == python
    assert stop == py_stop


@needs_native
@hypothesis_settings(max_examples=200, deadline=None)
@given(start=st.integers(0, 2**40), n=st.integers(0, 70))
def test_levels_are_the_python_levels(start: int, n: int) -> None:
    hashes = b"".join(bytes([i % 256]) * 32 for i in range(n))
    expected = scan._levels(start, hashes, None)
    assert NATIVE.levels(start, hashes) == expected
    assert scan._levels(start, hashes, NATIVE) == expected
    assert NATIVE.levels(start, bytearray(hashes)) == expected


@needs_native
def test_bad_arguments_are_refused_not_read_past() -> None:
    line = _entry(0, _chain(1)[0])
    with pytest.raises(ValueError, match="32-byte"):
        NATIVE.bulk(line, 0, len(line), 0, b"short", {}, {}, bytearray())
    with pytest.raises(ValueError, match="range"):
        NATIVE.bulk(line, 0, len(line) + 1, -1, b"", {}, {}, bytearray())
    with pytest.raises(ValueError, match="range"):
        NATIVE.bulk(line, 5, 4, -1, b"", {}, {}, bytearray())
    with pytest.raises(ValueError, match="32-byte"):
        NATIVE.levels(0, b"x" * 33)
    with pytest.raises(TypeError):
        NATIVE.bulk(line, 0, len(line), -1, b"", [], {}, bytearray())
    # A leaf cut anywhere: nothing accepted, nothing recorded.
    seen: dict[bytes, bytes] = {}
    hashes = bytearray()
    for cut in range(len(line) - 3):  # (at len - 3 it is the whole line again)
        assert NATIVE.bulk(line[:cut] + b'"}\n', 0, cut + 3, -1, b"", seen, {}, hashes)[0] == 0
    assert not seen and not hashes


@needs_native
def test_a_refused_line_changes_nothing() -> None:
    """Back-pointer refused after the chain and shape passed: seen/first stay as they were."""
    leaves = _chain(5, {4: {"prev_subject": 0}})  # entry 4's subject's previous entry is 1
    buf = b"".join(_entry(i, x) for i, x in enumerate(leaves))
    seen: dict[bytes, bytes] = {}
    first: dict[bytes, bytes] = {}
    hashes = bytearray()
    m, start, prev0, end = NATIVE.bulk(buf, 0, len(buf), -1, b"", seen, first, hashes)
    assert (m, start, prev0) == (4, 0, b"00" * 32)
    assert end == buf.index(_entry(4, leaves[4]))
    assert seen == {s.encode(): str(i).encode() for i, s in ((3, SUBJECTS[0]), (1, SUBJECTS[1]),
                                                              (2, SUBJECTS[2]))}
    assert set(first.values()) == {b"null"} and len(hashes) == 4 * 32
