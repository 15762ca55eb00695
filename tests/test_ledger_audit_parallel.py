"""``audit_export`` of an export file: the byte-range scan, inline and in worker processes.

A file is scanned in byte ranges (in a process pool for big exports) and handed to the
sequential, line-by-line audit at the first thing that does not fit. Whatever the ranges,
blocks and processes, the report, or the problem with its first bad index and detail,
must be exactly what the line-by-line audit of the same lines says. Here the ranges and
blocks are made tiny so that a 40-entry export crosses many range and block borders.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from exchange.ledger import audit, merkle
from exchange.ledger.audit import AuditFailed, AuditReport, audit_export
from exchange.ledger.checkpoint import Checkpoint, sign_checkpoint
from exchange.ledger.export import checkpoint_line, entry_line, header_line
from tests.test_ledger_audit import ORIGIN, SIGNER, _chain, _lines

N = 40
Outcome = tuple[Any, ...]

# (CHUNK_BYTES, BLOCK_BYTES): one line per range; a few lines per range and per block;
# one range with multi-line blocks (the inline path's shape for small files).
LAYOUTS = [(1, 1), (1500, 1300), (4000, 700), (10**9, 2500)]


def _outcome(run: Callable[[], AuditReport]) -> Outcome:
    try:
        r = run()
    except AuditFailed as e:
        return ("FAIL", e.problem, e.index, e.detail)
    return ("OK", r.checkpoint.size, r.subjects, tuple(c.size for c in r.consistent_with))


def _lines_of(f: io.TextIOWrapper) -> Iterator[str]:
    yield from f


def _reference(path: Path, olders: list[str]) -> Outcome:
    """The line-by-line audit of the file as a text reader splits it (as before the scan)."""

    def run() -> AuditReport:
        with path.open(encoding="utf-8") as f:
            return audit_export(_lines_of(f), verifier=SIGNER.verifier, older_checkpoint=olders)

    return _outcome(run)


def _from_file(path: Path, workers: int, olders: list[str]) -> Outcome:
    def run() -> AuditReport:
        with path.open(encoding="utf-8") as f:
            return audit_export(
                f, verifier=SIGNER.verifier, older_checkpoint=olders, workers=workers
            )

    return _outcome(run)


@pytest.fixture(params=LAYOUTS, ids=lambda lay: f"chunk{lay[0]}-block{lay[1]}")
def layout(request, monkeypatch) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    chunk, block = request.param
    monkeypatch.setattr(audit, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(audit, "BLOCK_BYTES", block)
    return chunk, block


def _same_everywhere(tmp: Path, lines: list[str], olders: list[str] | None = None) -> Outcome:
    """Audit ``lines`` line by line, then from a file inline and with two processes."""
    olders = olders or []
    path = tmp / "export.jsonl"
    path.write_text("".join(lines), encoding="utf-8", newline="")
    expected = _reference(path, olders)
    assert _from_file(path, 1, olders) == expected
    assert _from_file(path, 2, olders) == expected
    return expected


def _note(leaves: list[bytes]) -> str:
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(x) for x in leaves])
    return sign_checkpoint(Checkpoint(ORIGIN, len(leaves), root), SIGNER)


def _with_leaf(lines: list[str], k: int, **fields: Any) -> list[str]:
    """Entry k's leaf with some fields changed (canonical, the chain around it untouched)."""
    out = list(lines)
    raw = base64.b64decode(orjson.loads(out[k + 1])["leaf"])
    leaf = orjson.dumps({**orjson.loads(raw), **fields}, option=orjson.OPT_SORT_KEYS)
    out[k + 1] = entry_line(k, leaf)
    return out


def _swap(lines: list[str], i: int, j: int) -> list[str]:
    out = list(lines)
    out[i + 1], out[j + 1] = out[j + 1], out[i + 1]
    return out


# Entries are granted pulls about SUBJECTS[i % 3]: entry i >= 3 points back to i - 3.
CASES: dict[str, Callable[[list[str]], list[str]]] = {
    "untouched": lambda ls: ls,
    "edited first": lambda ls: _with_leaf(ls, 0, actor="x"),
    "edited middle": lambda ls: _with_leaf(ls, 17, actor="x"),
    "edited last": lambda ls: _with_leaf(ls, N - 1, actor="x"),
    "edited prev": lambda ls: _with_leaf(ls, 21, prev="11" * 32),
    "edited index": lambda ls: _with_leaf(ls, 9, index=90),
    "not canonical": lambda ls: [
        *ls[:12],
        entry_line(11, base64.b64decode(orjson.loads(ls[12])["leaf"]).replace(b'","', b'", "', 1)),
        *ls[13:],
    ],
    "wrong back-pointer": lambda ls: _with_leaf(ls, 25, prev_subject=21),
    "dropped back-pointer": lambda ls: _with_leaf(ls, 30, prev_subject=None),
    "back-pointer on a first entry": lambda ls: _with_leaf(ls, 1, prev_subject=0),
    "subject not a pseudonym": lambda ls: _with_leaf(ls, 14, subject="AB" * 32),
    "subject changed": lambda ls: _with_leaf(ls, 14, subject="ab" * 32),
    "missing": lambda ls: [*ls[:20], *ls[21:]],
    "missing run": lambda ls: [*ls[:5], *ls[12:]],
    "missing last": lambda ls: [*ls[:N], ls[-1]],
    "swapped": lambda ls: _swap(ls, 10, 11),
    "moved": lambda ls: _swap(ls, 2, 33),
    "duplicated": lambda ls: [*ls[:8], ls[5], *ls[9:]],
    "malformed line": lambda ls: [*ls[:16], "{oops\n", *ls[17:]],
    "blank line": lambda ls: [*ls[:16], "\n", *ls[16:]],
    "stored index a string": lambda ls: [*ls[:7], ls[7].replace('"index":6', '"index":"6"'), *ls[8:]],
    "leaf not base64": lambda ls: [*ls[:7], ls[7].replace('"leaf":"', '"leaf":"*'), *ls[8:]],
    "escaped base64": lambda ls: [*ls[:7], ls[7].replace('"leaf":"', '"leaf":"\\n'), *ls[8:]],
    "no checkpoint": lambda ls: ls[:-1],
    "after the checkpoint": lambda ls: [*ls, '{"more": 1}\n'],
    "blank lines after the checkpoint": lambda ls: [*ls, "\n", "  \n"],
    "no newline at the end": lambda ls: [*ls[:-1], ls[-1].rstrip("\n")],
    "entry without newline and no checkpoint": lambda ls: [*ls[:-2], ls[-2].rstrip("\n")],
    "header only": lambda ls: ls[:1],
    "empty": lambda ls: [],
    "header says more": lambda ls: [header_line(ORIGIN, "31", N + 1), *ls[1:]],
    "beyond the checkpoint": lambda ls: [
        header_line(ORIGIN, "31", N - 1),
        *ls[1:-1],
        checkpoint_line(_note(_chain(N)[:-1])),
    ],
    "checkpoint of other leaves": lambda ls: [
        *ls[:-1],
        checkpoint_line(_note([*_chain(N)[:-1], _chain(N, {N - 1: {"actor": "y"}})[-1]])),
    ],
    "bad signature": lambda ls: [*ls[:-1], ls[-1].replace(f"\\n{N}\\n", f"\\n{N - 1}\\n")],
    "crlf line ends": lambda ls: [x.replace("\n", "\r\n") for x in ls],
    "one crlf line": lambda ls: [*ls[:19], ls[19].replace("\n", "\r\n"), *ls[20:]],
    "a carriage return inside a line": lambda ls: [
        *ls[:19],
        ls[19].replace(',"leaf"', ',\r"leaf"'),
        *ls[20:],
    ],
    "spaces in an entry line": lambda ls: [*ls[:4], ls[4].replace(",", ", "), *ls[5:]],
    "non-ASCII reason": lambda ls: _lines(_chain(N, {7: {"reason": "核查"}, 23: {"reason": "é"}})),
    "nested item": lambda ls: _lines(_chain(N, {3: {"item": [[1]]}, 35: {"item": {"a": 1}}})),
    "brackets and quotes in strings": lambda ls: _lines(
        _chain(N, {2: {"reason": '[x] {y} "z" \\ w'}, 3: {"reason": "\t"}})
    ),
    "v is true": lambda ls: _lines(_chain(N, {26: {"v": True}})),
    "time_ms is a float": lambda ls: _lines(_chain(N, {26: {"time_ms": 1.5}})),
    "negative time": lambda ls: _lines(_chain(N, {26: {"time_ms": -5}})),
    "huge time": lambda ls: _lines(_chain(N, {26: {"time_ms": 10**19}})),
    "extra field": lambda ls: _lines(_chain(N, {31: {"extra": 1}})),
}


@pytest.mark.parametrize("case", list(CASES))
def test_file_scan_reports_what_the_line_audit_reports(tmp_path, layout, case) -> None:  # type: ignore[no-untyped-def]
    lines = CASES[case](_lines(_chain(N)))
    outcome = _same_everywhere(tmp_path, lines)
    if case == "untouched":
        assert outcome == ("OK", N, 3, ())


def test_kept_checkpoints_truncation_and_forks(tmp_path, layout) -> None:  # type: ignore[no-untyped-def]
    leaves = _chain(N)
    kept = [_note(leaves[:m]) for m in (1, 7, 16, 32, N)]
    lines = _lines(leaves)
    assert _same_everywhere(tmp_path, lines, kept) == ("OK", N, 3, (1, 7, 16, 32, N))
    # Truncated: the log signed 40 entries before, the export (validly signed) has 29.
    short = _lines(leaves[:29])
    outcome = _same_everywhere(tmp_path, short, kept)
    assert outcome[:3] == ("FAIL", "truncated", 29)
    # Forked: entries from 20 on re-chained and re-signed by the key holder.
    forked = _chain(N, {i: {"actor": "rewritten"} for i in range(20, N)})
    outcome = _same_everywhere(tmp_path, _lines(forked), kept)
    assert outcome[:3] == ("FAIL", "forked", 16)
    assert _same_everywhere(tmp_path, _lines(forked), kept[:3])[0] == "OK"


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_change_is_found_where_the_line_audit_finds_it(tmp_path, data) -> None:  # type: ignore[no-untyped-def]
    chunk = data.draw(st.sampled_from([1, 900, 2000, 10**9]))
    block = data.draw(st.sampled_from([1, 700, 1900, 10**6]))
    signed = _chain(N)
    leaves = list(signed)
    kind = data.draw(st.sampled_from(["edit", "delete", "swap", "pointer", "junk"]))
    k = data.draw(st.integers(0, N - 2))
    lines = _lines(leaves, signed)
    if kind == "edit":
        lines = _with_leaf(lines, k, actor="x")
    elif kind == "delete":
        del lines[k + 1]
    elif kind == "swap":
        lines = _swap(lines, k, k + 1)
    elif kind == "pointer":
        lines = _with_leaf(lines, k, prev_subject=None if k >= 3 else 0)
    else:
        lines[k + 1] = f'{{"index": {k}, "leaf": 7}}\n'
    path = tmp_path / "h.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    saved = audit.CHUNK_BYTES, audit.BLOCK_BYTES
    audit.CHUNK_BYTES, audit.BLOCK_BYTES = chunk, block
    try:
        expected = _reference(path, [])
        assert expected[0] == "FAIL"
        assert _from_file(path, 1, []) == expected
        assert _from_file(path, 2, []) == expected
    finally:
        audit.CHUNK_BYTES, audit.BLOCK_BYTES = saved


def test_not_utf8_fails_as_the_text_reader_does(tmp_path, layout) -> None:  # type: ignore[no-untyped-def]
    lines = _lines(_chain(N))
    data = "".join(lines).encode()
    at = data.index(lines[25].encode())
    path = tmp_path / "bad.jsonl"
    path.write_bytes(data[:at] + b"\xff" + data[at:])
    for workers in (1, 2):
        with path.open(encoding="utf-8") as f, pytest.raises(UnicodeDecodeError):
            audit_export(f, verifier=SIGNER.verifier, workers=workers)

    with path.open(encoding="utf-8") as f, pytest.raises(UnicodeDecodeError):
        audit_export(_lines_of(f), verifier=SIGNER.verifier)


def test_the_pool_is_used_above_the_threshold_and_reports_progress(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(audit, "CHUNK_BYTES", 3000)
    monkeypatch.setattr(audit, "PARALLEL_MIN_ENTRIES", N)
    pools: list[str | None] = []
    real = audit.multiprocessing.get_context

    def get_context(method: str | None = None) -> Any:
        pools.append(method)
        return real(method)

    monkeypatch.setattr(audit.multiprocessing, "get_context", get_context)
    monkeypatch.setattr(audit, "_usable_cores", lambda: 2)
    path = tmp_path / "e.jsonl"
    path.write_text("".join(_lines(_chain(N))), encoding="utf-8")
    calls: list[tuple[int, int]] = []
    with path.open(encoding="utf-8") as f:
        report = audit_export(f, verifier=SIGNER.verifier, progress=lambda d, t: calls.append((d, t)))
    assert report.checkpoint.size == N and report.subjects == 3
    assert pools, "a process pool was not started"
    assert calls[0] == (0, N) and calls[-1] == (N, N)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) > 3
    # Below the threshold: no pool, the same report.
    pools.clear()
    monkeypatch.setattr(audit, "PARALLEL_MIN_ENTRIES", N + 1)
    with path.open(encoding="utf-8") as f:
        assert audit_export(f, verifier=SIGNER.verifier) == report
    assert not pools


def test_readers_the_file_scan_does_not_take(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not at the start, not UTF-8, or not strict: the line audit reads them as given."""
    lines = _lines(_chain(5))
    path = tmp_path / "e.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    with path.open(encoding="utf-8") as f:
        f.readline()
        assert audit._regular_file(f) is None
    with path.open(encoding="latin-1") as f:
        assert audit._regular_file(f) is None
    with path.open(encoding="utf-8", errors="replace") as f:
        assert audit._regular_file(f) is None
    with path.open(encoding="utf-8") as f:
        assert audit._regular_file(f) == f.fileno()
        assert audit_export(f, verifier=SIGNER.verifier).checkpoint.size == 5
