"""``audit_export`` of an export file: the byte-range scan, inline and in worker processes.

A file is scanned in byte ranges (in a process pool for big exports) and handed to the
sequential, line-by-line audit at the first thing that does not fit. Whatever the ranges,
blocks and processes, the report, or the problem with its first bad index and detail,
must be exactly what the line-by-line audit of the same lines says. Here the ranges and
blocks are made tiny so that a 40-entry export crosses many range and block borders.
Every such test runs twice: with the C scanner (``_native``) and with the Python one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from exchange.ledger import merkle
from exchange.ledger.audit import AuditFailed, AuditReport, audit_export, b64block, files, scan
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
    except UnicodeDecodeError:
        return ("UnicodeDecodeError",)
    return ("OK", r.checkpoint.size, r.subjects, tuple(c.size for c in r.consistent_with))


def _lines_of(f: io.TextIOWrapper) -> Iterator[str]:
    yield from f


def _reference(path: Path, olders: list[str]) -> Outcome:
    """The line-by-line audit of the file as a text reader splits it (as before the scan)."""

    def run() -> AuditReport:
        with path.open(encoding="utf-8") as f:
            return audit_export(_lines_of(f), verifier=SIGNER.verifier, older_checkpoint=olders)

    return _outcome(run)


def _from_file(path: Path, workers: int, olders: list[str], mode: str = "r") -> Outcome:
    def run() -> AuditReport:
        with path.open(mode, encoding="utf-8" if mode == "r" else None) as f:
            return audit_export(
                f, verifier=SIGNER.verifier, older_checkpoint=olders, workers=workers
            )

    return _outcome(run)


def _from_pipe(path: Path, olders: list[str]) -> Outcome:
    """The export's bytes through a real pipe (read once, as from standard input)."""
    data = path.read_bytes()
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f, contextlib.suppress(BrokenPipeError):
            f.write(data)  # (an audit that stops early closes its end first)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with os.fdopen(r, "rb") as f:
            return _outcome(
                lambda: audit_export(f, verifier=SIGNER.verifier, older_checkpoint=olders)
            )
    finally:
        feeder.join()


NATIVE = scan.native


@pytest.fixture(params=["native", "python"])
def scanner(request, monkeypatch) -> str:  # type: ignore[no-untyped-def]
    """The block scanner: the C accelerator where it is built, or the Python reference."""
    if request.param == "native":
        if NATIVE is None:
            pytest.skip("the C scanner is not built here (tests/test_ledger_audit_native.py)")
        monkeypatch.setattr(scan, "native", NATIVE)
    else:
        monkeypatch.setattr(scan, "native", None)
    return str(request.param)


@pytest.fixture(params=LAYOUTS, ids=lambda lay: f"chunk{lay[0]}-block{lay[1]}")
def layout(request, monkeypatch, scanner) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    chunk, block = request.param
    monkeypatch.setattr(files, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(scan, "BLOCK_BYTES", block)
    return chunk, block


def _same_everywhere(tmp: Path, lines: list[str], olders: list[str] | None = None) -> Outcome:
    """Audit ``lines`` line by line, then from a file inline and with two processes (in
    text and in binary mode), then through a pipe."""
    olders = olders or []
    path = tmp / "export.jsonl"
    path.write_text("".join(lines), encoding="utf-8", newline="")
    expected = _reference(path, olders)
    assert _from_file(path, 1, olders) == expected
    assert _from_file(path, 2, olders) == expected
    assert _from_file(path, 2, olders, "rb") == expected
    assert _from_pipe(path, olders) == expected
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
def test_any_single_change_is_found_where_the_line_audit_finds_it(tmp_path, scanner, data) -> None:  # type: ignore[no-untyped-def]
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
    saved = files.CHUNK_BYTES, scan.BLOCK_BYTES
    files.CHUNK_BYTES, scan.BLOCK_BYTES = chunk, block
    try:
        expected = _reference(path, [])
        assert expected[0] == "FAIL"
        assert _from_file(path, 1, []) == expected
        assert _from_file(path, 2, []) == expected
        assert _from_pipe(path, []) == expected
    finally:
        files.CHUNK_BYTES, scan.BLOCK_BYTES = saved


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
    assert _from_pipe(path, [])[0] == "UnicodeDecodeError"


def test_the_pool_is_used_above_the_threshold_and_reports_progress(tmp_path, monkeypatch, scanner) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(files, "CHUNK_BYTES", 3000)
    monkeypatch.setattr(files, "PARALLEL_MIN_ENTRIES", N)
    pools: list[str | None] = []
    real = files.multiprocessing.get_context

    def get_context(method: str | None = None) -> Any:
        pools.append(method)
        return real(method)

    monkeypatch.setattr(files.multiprocessing, "get_context", get_context)
    monkeypatch.setattr(files, "_usable_cores", lambda: 2)
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
    monkeypatch.setattr(files, "PARALLEL_MIN_ENTRIES", N + 1)
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
        assert files.regular_file(f) is None
    with path.open(encoding="latin-1") as f:
        assert files.regular_file(f) is None
    with path.open(encoding="utf-8", errors="replace") as f:
        assert files.regular_file(f) is None
    with path.open(encoding="utf-8") as f:
        assert files.regular_file(f) == f.fileno()
        assert audit_export(f, verifier=SIGNER.verifier).checkpoint.size == 5


# -- the block-wise base64 decoder (pydantic-core, one call per block) ------------------------


def _b64_of(lines: list[str], k: int) -> str:
    b64: str = orjson.loads(lines[k + 1])["leaf"]
    return b64


def _with_b64(lines: list[str], k: int, b64: str) -> list[str]:
    out = list(lines)
    out[k + 1] = f'{{"index":{k},"leaf":"{b64}"}}\n'
    return out


def _loose_bits(b64: str) -> str:
    """The same bytes to strict a2b, but with non-zero unused bits (pydantic refuses it)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = len(b64) - len(b64.rstrip("="))
    assert pad, "needs a padded leaf"
    last = len(b64) - pad - 1
    v = alphabet.index(b64[last]) | (0b1111 if pad == 2 else 0b11)
    return b64[:last] + alphabet[v] + b64[last + 1 :]


def _padded(lines: list[str], start: int) -> int:
    return next(k for k in range(start, N) if _b64_of(lines, k).endswith("="))


def _url_safe_leaf() -> tuple[list[str], int]:
    """An export where entry 13's base64 holds '+' or '/' (URL-safe: '-' or '_')."""
    lines = _lines(_chain(N, {13: {"reason": "???>>>~~~???>>>~~~"}}))
    assert set(_b64_of(lines, 13)) & {"+", "/"}
    return lines, 13


def _url_safe_alphabet() -> list[str]:
    lines, k = _url_safe_leaf()
    return _with_b64(lines, k, _b64_of(lines, k).replace("+", "-").replace("/", "_"))


B64_CASES: dict[str, Callable[[list[str]], list[str]]] = {
    "non-zero unused bits (a2b takes them)": lambda ls: _with_b64(
        ls, _padded(ls, 9), _loose_bits(_b64_of(ls, _padded(ls, 9)))
    ),
    "padding dropped": lambda ls: _with_b64(
        ls, _padded(ls, 9), _b64_of(ls, _padded(ls, 9)).rstrip("=")
    ),
    "one padding character dropped": lambda ls: _with_b64(
        ls, _padded(ls, 9), _b64_of(ls, _padded(ls, 9))[:-1]
    ),
    "padding inside": lambda ls: _with_b64(ls, 6, "QQ==" + _b64_of(ls, 6)),
    "padding replaced by data": lambda ls: _with_b64(
        ls, _padded(ls, 9), _b64_of(ls, _padded(ls, 9))[:-1] + "A"
    ),
    "too much padding": lambda ls: _with_b64(ls, 6, _b64_of(ls, 6) + "===="),
    "url-safe alphabet": lambda ls: _url_safe_alphabet(),
    "url-safe leaf, standard alphabet": lambda ls: _url_safe_leaf()[0],
    "json escape in base64": lambda ls: _with_b64(ls, 6, "\\u0051" + _b64_of(ls, 6)[1:]),
    "space in base64": lambda ls: _with_b64(ls, 6, _b64_of(ls, 6)[:8] + " " + _b64_of(ls, 6)[9:]),
    "empty leaf": lambda ls: _with_b64(ls, 6, ""),
    "mixed padded and unpadded, one unpadded without padding": lambda ls: _with_b64(
        ls, _padded(ls, 30), _b64_of(ls, _padded(ls, 30)).rstrip("=")
    ),
}


@pytest.mark.parametrize("decoder", ["block", "per line"])
@pytest.mark.parametrize("case", list(B64_CASES))
def test_block_base64_names_the_line_and_problem_the_line_audit_does(  # type: ignore[no-untyped-def]
    tmp_path, layout, monkeypatch, case, decoder
) -> None:
    assert scan.decoder() is not None, "pydantic-core's decoder is not in use"
    if decoder == "per line":
        monkeypatch.setattr(b64block, "_MANY", [None])
    lines = _lines(_chain(N))
    assert {len(_b64_of(lines, k)) % 3 for k in range(N)} != {0}  # padded and unpadded mix
    changed = B64_CASES[case](lines)
    outcome = _same_everywhere(tmp_path, changed)
    if case.startswith(("non-zero", "url-safe leaf")):
        assert outcome[0] == "OK"
    else:
        assert outcome[:2] == ("FAIL", "malformed") or outcome[:2] == ("FAIL", "edited")


_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40).map(base64.b64encode),
            st.text(_B64_CHARS + "=-_\\ *\n\u00e9", max_size=12).map(str.encode),
            st.binary(max_size=12).filter(lambda b: b'"' not in b),  # pieces of a quote split
            st.binary(min_size=1, max_size=40).map(base64.b64encode).map(
                lambda b: b[:-1] if b.endswith(b"=") else b + b"="  # one padding off or on
            ),
            st.binary(min_size=1, max_size=40)
            .filter(lambda b: len(b) % 3 != 0)
            .map(lambda b: _loose_bits(base64.b64encode(b).decode()).encode()),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_block_decoder_decodes_exactly_what_strict_a2b_decodes(b64s: list[bytes]) -> None:
    """Whatever the strings (as a split at quotes gives them), one block decode is strict
    a2b line by line: the same bytes, or None where any one line is not strict base64."""
    try:
        expected: list[bytes] | None = [binascii.a2b_base64(x, strict_mode=True) for x in b64s]
    except ValueError:
        expected = None
    sc = scan.Scanner()
    sc.many = scan.decoder()  # (a Scanner over the C scanner does not make it)
    assert sc.many is not None
    assert sc.decode(list(b64s)) == expected
