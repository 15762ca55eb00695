"""``certex ledger export``: the ledger as one file an auditor verifies offline; its format.

Format ``certex-ledger-export/1``: JSON Lines, UTF-8, one JSON object per line::

    {"format": "certex-ledger-export/1", "origin": "<host>/ledger", "node": "31", "size": N}
    {"index": 0, "leaf": "<standard base64 of the exact leaf bytes>"}
    ...                                            (one line per stored entry below N)
    {"index": N-1, "leaf": "..."}
    {"checkpoint": "<the signed C2SP checkpoint note of size N, verbatim>"}

``size`` and the checkpoint are the latest signed tree head, read *before* the entries, so
the file holds exactly the entries [0, N) that checkpoint commits to, even while the node
keeps appending. Each entry line carries the stored row's index as found; the audit trusts
only the index inside the leaf bytes, so a deleted or moved row shows up as a gap or a
mismatch there. Entries are streamed in batches; the ledger is never held in memory.
The ``read_*`` functions are the format's strict reader (used by :mod:`.audit`).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from exchange.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from exchange.node import Node

FORMAT: Final = "certex-ledger-export/1"
"""The value of the header line's ``format`` member."""

EXPORT_BATCH: Final = 4096
"""Entries read, formatted and written at a time (and between two progress callbacks)."""

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called now and then while entries stream."""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What was written: the checkpoint's size and how many entry lines the file holds."""

    origin: str
    size: int
    entries: int


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """The first line of an export. Unauthenticated: the checkpoint must agree with it."""

    origin: str
    node: str
    size: int


def header_line(origin: str, node: str, size: int) -> str:
    """The first line of an export."""
    header = {"format": FORMAT, "origin": origin, "node": node, "size": size}
    return orjson.dumps(header).decode() + "\n"


def entry_line(index: int, leaf: bytes) -> str:
    """One entry line: the stored index and the base64 of the exact hashed leaf bytes."""
    return entry_lines([(index, leaf)])


def entry_lines(rows: Iterable[tuple[int, bytes]]) -> str:
    """The entry lines of (index, leaf) rows, one string (written at once, per batch)."""
    b64 = binascii.b2a_base64
    return "".join(
        [f'{{"index":{i},"leaf":"{b64(x, newline=False).decode("ascii")}"}}\n' for i, x in rows]
    )


def checkpoint_line(note: str) -> str:
    """The last line of an export: the signed checkpoint note, verbatim, as a JSON string."""
    return orjson.dumps({"checkpoint": note}).decode() + "\n"


def export_ledger(node: Node, out: IO[str], progress: Progress | None = None) -> ExportSummary:
    """Write the ledger up to its latest signed checkpoint to ``out`` (see the module doc).

    Raises :class:`NotFound` if the ledger has no signed checkpoint yet. Entries missing
    from storage are not invented: the file then has fewer entry lines than ``size``, which
    is exactly what the audit reports.
    """
    # The writer side needs the database; the reader side (the audit) must not load it.
    from exchange.ledger import store
    from exchange.ledger.writer import origin_of

    with node.engine.connect() as conn:
        # 1. The tree head first: everything below its size is immutable, appends are not.
        cp = store.latest_checkpoint(conn)
        if cp is None:
            raise NotFound("the ledger has no signed checkpoint yet", code="no-checkpoint")
        origin = origin_of(node)
        out.write(header_line(origin, node.settings.node, cp.size))
        # 2. The entries below that size, in index order, in batches.
        written = 0
        if progress is not None:
            progress(0, cp.size)
        if cp.size:
            for rows in store.entry_batches(conn, cp.size, EXPORT_BATCH):
                out.write(entry_lines(rows))
                written += len(rows)
                if progress is not None:
                    progress(written, cp.size)
        if progress is not None:
            progress(written, cp.size)
        # 3. The signed checkpoint those entries must hash to.
        out.write(checkpoint_line(cp.note))
    return ExportSummary(origin, cp.size, written)


# -- the strict reader: each raises InvalidInput (code export-malformed) ---------------------


def _malformed(detail: str) -> InvalidInput:
    return InvalidInput(detail, code="export-malformed")


def _json_object(line: str, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise _malformed(f"{what} is not JSON") from e
    if not isinstance(obj, dict):
        raise _malformed(f"{what} is not a JSON object")
    return obj


def read_header(line: str) -> ExportHeader:
    """Parse the header line: exactly ``format``, ``origin``, ``node`` and ``size``."""
    obj = _json_object(line, "the header line")
    if obj.get("format") != FORMAT:
        raise _malformed(f"the first line does not declare format {FORMAT}")
    origin, node, size = obj.get("origin"), obj.get("node"), obj.get("size")
    if set(obj) != {"format", "origin", "node", "size"} or not (
        isinstance(origin, str) and isinstance(node, str) and type(size) is int and size >= 0
    ):
        raise _malformed("the header needs exactly format, origin, node and size >= 0")
    return ExportHeader(origin, node, size)


def is_checkpoint_line(line: str) -> bool:
    """Whether ``line`` is a JSON object with a ``checkpoint`` member (the last line)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and "checkpoint" in obj


def read_entry_line(line: str) -> tuple[int, bytes]:
    """Parse an entry line: the stored index and the leaf bytes (strict standard base64)."""
    obj = _json_object(line, "the line")
    if set(obj) != {"index", "leaf"}:
        raise _malformed("the line needs exactly index and leaf")
    stored, b64 = obj["index"], obj["leaf"]
    if type(stored) is not int or stored < 0 or not isinstance(b64, str):
        raise _malformed("index or leaf has the wrong type")
    try:
        return stored, binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise _malformed("leaf is not base64") from e


def read_checkpoint_line(line: str) -> str:
    """Parse the last line: the signed checkpoint note, not yet verified."""
    obj = _json_object(line, "the checkpoint line")
    note = obj.get("checkpoint")
    if set(obj) != {"checkpoint"} or not isinstance(note, str):
        raise _malformed("the checkpoint line needs exactly a checkpoint note string")
    return note
