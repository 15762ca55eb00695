"""The writer's C builder (``exchange.ledger._batch``) against the Python reference.

``LeafBatch.columns`` computes a batch's leaves, hashes, back-pointers, frontier and new
subtree hashes in Python; the C builder does the same for batches whose every string is
plain (printable ASCII without '"' or '\\'), and also writes their binary COPY data. Here
both run over the same random batches and must end in exactly the same state; every leaf
must be ``encode_leaf``'s bytes; the COPY data must decode to exactly the rows; and a batch
with anything not plain must be left to Python with nothing changed. Every other ledger
test runs with the builder too (it is the default where built).
"""

from __future__ import annotations

import copy
import hashlib
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from exchange.ledger import leaves, merkle, pgbatch
from exchange.ledger.leaf import KINDS, OUTCOMES, Event, encode_leaf
from exchange.ledger.leaves import Frontier, LeafBatch
from exchange.ledger.store import STRATUM, decomposition
from tests.helpers import assert_built_where_it_can_be

NATIVE = leaves.native
needs_native = pytest.mark.skipif(NATIVE is None, reason="the C builder is not built here")

PLAIN = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
    max_size=40,
)
HEX64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
SUBJECTS = [hashlib.sha256(f"s{i}".encode()).hexdigest() for i in range(6)]


def test_the_c_builder_is_built_where_it_can_be() -> None:
    """``make install`` builds it wherever it can; without it the writer is slower."""
    assert_built_where_it_can_be(NATIVE, "CERTEX_LEDGER_NATIVE", "the C builder")


def _events(text: st.SearchStrategy[str]) -> st.SearchStrategy[Event]:
    maybe = st.none() | text
    return st.builds(
        Event,
        kind=st.sampled_from(sorted(KINDS)),
        actor=text,
        outcome=st.sampled_from(sorted(OUTCOMES)),
        subject=st.none() | st.sampled_from(SUBJECTS),
        item=maybe,
        certificate=maybe,
        consent=maybe,
        reason=maybe,
        request_sha256=st.none() | HEX64,
    )


@st.composite
def _batches(draw: st.DrawFn, text: st.SearchStrategy[str] = PLAIN) -> dict[str, Any]:
    size = draw(st.integers(0, 5000) | st.integers(0, 2**48))
    # The frontier of a tree of ``size``: its decomposition, with any hashes (the builder
    # only folds them).
    frontier = [
        (lvl, i, hashlib.sha256(f"{lvl}/{i}".encode()).digest())
        for lvl, i in decomposition(0, size)
    ]
    events = draw(st.lists(_events(text), min_size=1, max_size=40))
    known = draw(st.dictionaries(st.sampled_from(SUBJECTS), st.none() | st.integers(0, 10**12)))
    last_for_subject = {s: known.get(s) for s in SUBJECTS}
    return {
        "size": size,
        "last_hash": draw(st.binary(min_size=32, max_size=32)),
        "frontier": Frontier(frontier),
        "node": draw(st.sampled_from(["31", "44", "node-a.example"])),
        "time_ms": draw(st.integers(0, 2**53)),
        "last_for_subject": last_for_subject,
        "events": [(f"ref-{k:032d}", e) for k, e in enumerate(events)],
        # The first ``stored`` events are outbox events: only their refs are stored.
        "stored": draw(st.integers(0, len(events))),
    }


def _run(spec: dict[str, Any], builder: Any) -> tuple[LeafBatch, Any]:
    spec = copy.deepcopy(spec)
    events, stored = spec.pop("events"), spec.pop("stored")
    batch = LeafBatch(**spec)
    saved = leaves.native
    leaves.native = builder
    try:
        return batch, batch.columns(events, stored)
    finally:
        leaves.native = saved


def _state(batch: LeafBatch, cols: Any) -> tuple[Any, ...]:
    rows = (cols.idx, cols.leaf, cols.leaf_hash, cols.ref, cols.kind, cols.actor, cols.subject)
    return (rows, batch.nodes, batch.frontier.nodes, batch.done, batch.size, batch.last_hash,
            batch.last_for_subject)


def _copy_rows(data: bytes, types: str) -> list[tuple[Any, ...]]:
    """Decode PostgreSQL binary COPY data (``types``: one letter a column: q int8, h int2,
    b bytes, t text) — written from the format's definition, not from our writer."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[11:19] == b"\x00" * 8
    at, rows = 19, []
    while True:
        (count,) = struct.unpack_from(">h", data, at)
        at += 2
        if count == -1:
            assert at == len(data), "bytes after the trailer"
            return rows
        assert count == len(types)
        row: list[Any] = []
        for kind in types:
            (n,) = struct.unpack_from(">i", data, at)
            at += 4
            if n == -1:
                row.append(None)
                continue
            raw = data[at : at + n]
            at += n
            if kind == "q":
                assert n == 8
                row.append(struct.unpack(">q", raw)[0])
            elif kind == "h":
                assert n == 2
                row.append(struct.unpack(">h", raw)[0])
            elif kind == "t":
                row.append(raw.decode())
            else:
                row.append(raw)
        rows.append(tuple(row))


@needs_native
@hypothesis_settings(max_examples=300, deadline=None)
@given(spec=_batches())
def test_the_c_builder_ends_where_python_does(spec: dict[str, Any]) -> None:
    py_batch, py_cols = _run(spec, None)
    c_batch, c_cols = _run(spec, NATIVE)
    assert c_cols.copy is not None, "a plain batch took the Python path"
    assert py_cols.copy is None
    assert _state(c_batch, c_cols) == _state(py_batch, py_cols)
    # Every leaf is encode_leaf's, chained, back-pointing as the batch says.
    prev = spec["last_hash"]
    for i, (ref, event) in enumerate(spec["events"]):
        index = spec["size"] + i
        leaf = encode_leaf(event, index=index, time_ms=spec["time_ms"], node=spec["node"],
                           prev=prev, prev_subject=_prev_subject(spec, i))
        assert c_cols.leaf[i] == leaf
        assert c_cols.leaf_hash[i] == merkle.leaf_hash(leaf)
        assert c_batch.done[ref] == index  # every event's caller gets its index
        assert c_cols.ref[i] == (ref if i < spec["stored"] else None)  # stored or not
        prev = c_cols.leaf_hash[i]
    # The COPY data is exactly those rows, and exactly the new subtree rows.
    entries, nodes = c_cols.copy
    rows = list(zip(c_cols.idx, c_cols.leaf, c_cols.leaf_hash, c_cols.ref, c_cols.kind,
                    c_cols.actor, c_cols.subject, strict=True))
    # ... then time_ms and the subject's first 64 bits as a signed bigint (or NULL).
    prefixes = [None if s is None else int.from_bytes(bytes.fromhex(s[:16]), "big", signed=True)
                for s in c_cols.subject]
    expected = [(*r, spec["time_ms"], p) for r, p in zip(rows, prefixes, strict=True)]
    assert _copy_rows(entries, "qbbttttqq") == expected
    assert list(py_cols.rows(spec["time_ms"])) == expected  # the Python path's rows
    assert _copy_rows(nodes, "hqb") == c_batch.nodes
    # The Python path's COPY data (pgbatch.copy_binary) is the same bytes.
    assert pgbatch.copy_binary(py_cols.rows(spec["time_ms"]), pgbatch._ENTRY_TYPES) == entries
    assert pgbatch.copy_binary(py_batch.nodes, pgbatch._NODE_TYPES) == nodes
    # Only the stored levels' new subtrees: every one the batch completed at such a level.
    completed = [(lvl, i) for lvl in range(STRATUM, 64, STRATUM)
                 for i in range(spec["size"] >> lvl, c_batch.size >> lvl)]
    assert [(lvl, i) for lvl, i, _ in c_batch.nodes] == sorted(completed, key=lambda c: (c[1] + 1) << c[0])


def _prev_subject(spec: dict[str, Any], i: int) -> int | None:
    subject = spec["events"][i][1].subject
    if subject is None:
        return None
    for j in range(i - 1, -1, -1):
        if spec["events"][j][1].subject == subject:
            return int(spec["size"]) + j
    return spec["last_for_subject"][subject]  # type: ignore[no-any-return]


ANY_TEXT = st.text(max_size=12)  # escapes, control characters, non-ASCII, DEL


@needs_native
@hypothesis_settings(max_examples=200, deadline=None)
@given(spec=_batches(text=PLAIN | ANY_TEXT))
def test_anything_not_plain_is_left_to_python_unchanged(spec: dict[str, Any]) -> None:
    """A batch with one string that is not plain: the builder declines before changing
    anything, and the Python path gives the batch (so both end the same)."""
    plain = all(
        v is None or (v.isascii() and v.isprintable() and '"' not in v and "\\" not in v)
        for _, e in spec["events"]
        for v in (e.kind, e.actor, e.outcome, e.subject, e.item, e.certificate, e.consent,
                  e.reason, e.request_sha256)
    )
    before = copy.deepcopy(spec)
    batch = LeafBatch(**{k: v for k, v in before.items() if k not in ("events", "stored")})
    fields = [leaves._EVENT_VALUES(e) for _, e in spec["events"]]
    out = NATIVE.leaves(  # type: ignore[union-attr]
        fields, [r for r, _ in spec["events"]], batch.size, batch.last_hash, batch.time_ms,
        batch.node, [None] * len(fields), list(batch.frontier.nodes), STRATUM,
    )
    assert (out is not None) == plain
    py_batch, py_cols = _run(spec, None)
    c_batch, c_cols = _run(spec, NATIVE)
    assert (c_cols.copy is not None) == plain
    assert _state(c_batch, c_cols) == _state(py_batch, py_cols)


@needs_native
@pytest.mark.parametrize(
    "text", ['a"b', "a\\b", "tab\there", "\x00", "\x7f", "é", "\u2028", "\ud800", "ok"]
)
def test_each_kind_of_string_that_needs_escaping_is_declined(text: str) -> None:
    fields = [("pull", text, "ok", None, None, None, None, None, None)]
    out = NATIVE.leaves(  # type: ignore[union-attr]
        fields, ["r"], 0, b"\0" * 32, 1, "31", [None], [], STRATUM
    )
    assert (out is None) == (text != "ok")
    out = NATIVE.leaves(  # type: ignore[union-attr]
        [("pull", "a", "ok", None, None, None, None, None, None)], ["r"], 0, b"\0" * 32, 1,
        text, [None], [], STRATUM,
    )
    assert (out is None) == (text != "ok")  # the node's name too


@needs_native
@pytest.mark.parametrize(
    "args",
    [
        ([("pull",)], ["r"], 0, b"\0" * 32, 1, "31", [None], []),  # a short tuple
        ([("pull", "a", "ok", None, None, None, None, None, None)], [], 0, b"\0" * 32, 1, "31",
         [None], []),  # refs of another length
        ([("pull", "a", "ok", None, None, None, None, None, None)], [5], 0, b"\0" * 32, 1, "31",
         [None], []),  # a ref neither str nor None
        ([("pull", "a", "ok", None, None, None, None, None, None)], ["r"], 0, b"\0" * 31, 1,
         "31", [None], []),  # a 31-byte prev
        ([("pull", "a", "ok", None, None, None, None, None, None)], ["r"], -1, b"\0" * 32, 1,
         "31", [None], []),  # a negative index
        ([("pull", "a", "ok", None, None, None, None, None, None)], ["r"], 0, b"\0" * 32, 1,
         "31", ["1"], []),  # a back-pointer that is not an int
        ([("pull", "a", "ok", None, None, None, None, None, None)], ["r"], 1, b"\0" * 32, 1,
         "31", [None], [(0, 0, b"\0" * 5)]),  # a short frontier hash
        ([("pull", "a", "ok", None, None, None, None, None, None)], ["r"], 1, b"\0" * 32, 1,
         "31", [None], [(99, 0, b"\0" * 32)]),  # a level no tree has
    ],
)
def test_bad_arguments_are_refused(args: tuple[Any, ...]) -> None:
    with pytest.raises((ValueError, TypeError)):
        NATIVE.leaves(*args, STRATUM)  # type: ignore[union-attr]


@needs_native
def test_a_stratum_below_one_is_refused() -> None:
    args = ([("pull", "a", "ok", None, None, None, None, None, None)], ["r"], 0, b"\0" * 32, 1,
            "31", [None], [])
    assert NATIVE.leaves(*args, STRATUM) is not None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="stratum"):
        NATIVE.leaves(*args, 0)  # type: ignore[union-attr]
