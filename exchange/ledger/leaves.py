"""A batch's leaves: canonical bytes, hash chain, subject back-pointers, frontier, new
subtree hashes — and the leaf rules for events handed straight to the writer.

:class:`LeafBatch` computes them in index order for :mod:`.append`, which reads and checks
the stored tree before and writes the rows after. Where it is built, a small C module
(:mod:`exchange.ledger._batch`) does the same for batches whose strings are all plain ASCII,
and writes their COPY data; the Python loop here is the reference (tests hold them equal).
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson

from exchange.errors import InvalidInput
from exchange.ledger import merkle, pgbatch, store
from exchange.ledger.leaf import LEAF_VERSION, Event, encode_leaf

_EVENT_FIELDS = tuple(Event.__dataclass_fields__)
# The C builder takes each event as this tuple, in this order.
_EVENT_VALUES = operator.attrgetter(*_EVENT_FIELDS)
_NATIVE_FIELDS = (
    "kind", "actor", "outcome", "subject", "item", "certificate", "consent", "reason",
    "request_sha256",
)


def _load_native() -> ModuleType | None:
    """The writer's C builder, unless not built, ``CERTEX_LEDGER_NATIVE=0``, or the leaf
    format is not the one it writes."""
    if os.environ.get("CERTEX_LEDGER_NATIVE", "1") == "0":
        return None
    if _EVENT_FIELDS != _NATIVE_FIELDS or LEAF_VERSION != 1:
        return None
    try:
        from exchange.ledger import _batch
    except ImportError:
        return None
    return _batch


native: ModuleType | None = _load_native()

Ref = str | int
"""What a batch's caller is told its event's index by: an outbox event's ref (a UUID string,
stored with its entry) or, for a direct event, a number the writer gives it (not stored)."""


@dataclass
class Frontier:
    """The perfect subtrees of the binary decomposition of the tree, largest first."""

    nodes: list[tuple[int, int, bytes]]  # (level, index at that level, hash)

    def append(self, index: int, leaf_hash: bytes, new_nodes: list[tuple[int, int, bytes]]) -> None:
        nodes = self.nodes
        nodes.append((0, index, leaf_hash))
        while len(nodes) > 1 and nodes[-1][0] == nodes[-2][0]:
            lvl, _, right = nodes.pop()
            _, left_idx, left = nodes.pop()
            parent = (lvl + 1, left_idx >> 1, merkle.node_hash(left, right))
            nodes.append(parent)
            new_nodes.append(parent)

    def root(self) -> bytes:
        if not self.nodes:
            return merkle.EMPTY_ROOT
        acc = self.nodes[-1][2]
        for _, _, h in reversed(self.nodes[:-1]):
            acc = merkle.node_hash(h, acc)
        return acc


def _flat_fields(event: Event) -> dict[str, Any] | None:
    """``event.to_json()`` when every field is a plain ``str`` or None (as Event declares),
    built without ``dataclasses.asdict``'s deep copy; otherwise None."""
    fields = {name: getattr(event, name) for name in _EVENT_FIELDS}
    for value in fields.values():
        if value is not None and type(value) is not str:
            return None
    return fields


def _leaf(
    event: Event, *, index: int, time_ms: int, node: str, prev: bytes, prev_subject: int | None
) -> bytes:
    """Exactly ``encode_leaf``'s bytes, cheaper in the common case.

    ``canonical_json`` is a type walk followed by ``orjson.dumps(obj, OPT_SORT_KEYS)``. A leaf
    whose event fields are all ``str``/None and whose own fields are ints, str and None passes
    that walk by construction, so the same orjson call gives the same bytes; anything else
    (and any string orjson refuses) goes through ``encode_leaf`` itself.
    (tests/test_ledger_direct.py pins the equality.)
    """
    fields = _flat_fields(event)
    if fields is not None and type(node) is str:
        fields["v"] = LEAF_VERSION
        fields["index"] = index
        fields["time_ms"] = time_ms
        fields["node"] = node
        fields["prev"] = prev.hex()
        fields["prev_subject"] = prev_subject
        try:
            return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
    return encode_leaf(
        event, index=index, time_ms=time_ms, node=node, prev=prev, prev_subject=prev_subject
    )


def check_direct(event: Event) -> None:
    """Refuse, in the caller's thread, an event the writer could not encode as a leaf.

    Stricter than the outbox, on purpose: a leaf whose ``actor`` is not a string would be
    committed but fail ``decode_leaf`` in every audit, so direct events must hold only
    ``str``/None (what :class:`Event` declares) that canonical JSON can encode.
    """
    if not isinstance(event, Event):
        raise InvalidInput(f"not a ledger Event: {type(event).__name__}")
    ascii_only = True
    for value in _EVENT_VALUES(event):
        if value is None:
            continue
        if type(value) is not str:
            raise InvalidInput("ledger event fields must be strings or None")
        ascii_only = ascii_only and value.isascii()
    if ascii_only:
        return  # (an ASCII string always encodes: only lone surrogates do not)
    try:
        orjson.dumps(_flat_fields(event))
    except orjson.JSONEncodeError as e:  # lone surrogates
        raise InvalidInput(f"ledger event is not encodable as JSON: {e}") from e


@dataclass
class LeafBatch:
    """The leaves of one batch, computed in index order."""

    size: int
    last_hash: bytes
    frontier: Frontier
    node: str
    time_ms: int
    last_for_subject: dict[str, int | None]
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    done: dict[Ref, int] = field(default_factory=dict)

    def columns(self, events: list[tuple[Ref, Event]], stored: int) -> pgbatch.Columns:
        """ledger_entries rows in index order; fills ``nodes`` and ``done`` (every event's
        ref) as it goes. The first ``stored`` events' refs are stored with their rows (the
        outbox events': a waiter may look for them in the ledger); the rest (direct
        events, answered from memory) are stored without one. Through the C builder
        (:mod:`exchange.ledger._batch`) when it is built and every event is plain;
        otherwise, and as the reference, in Python."""
        if native is not None and events:
            built = self._native_columns(native, events, stored)
            if built is not None:
                return built
        size, last_hash, time_ms, node = self.size, self.last_hash, self.time_ms, self.node
        last_for_subject, done, frontier, nodes = (
            self.last_for_subject,
            self.done,
            self.frontier,
            self.nodes,
        )
        out = pgbatch.Columns.empty()
        for k, (ref, event) in enumerate(events):
            subject = event.subject
            leaf = _leaf(
                event,
                index=size,
                time_ms=time_ms,
                node=node,
                prev=last_hash,
                prev_subject=None if subject is None else last_for_subject[subject],
            )
            h = merkle.leaf_hash(leaf)
            out.idx.append(size)
            out.leaf.append(leaf)
            out.leaf_hash.append(h)
            out.ref.append(str(ref) if k < stored else None)
            out.kind.append(event.kind)
            out.actor.append(event.actor)
            out.subject.append(subject)
            frontier.append(size, h, nodes)
            if subject is not None:
                last_for_subject[subject] = size
            done[ref] = size
            size, last_hash = size + 1, h
        self.size, self.last_hash = size, last_hash
        nodes[:] = [n for n in nodes if store.is_stored(n[0])]  # only those stored
        return out

    def _native_columns(
        self, builder: ModuleType, events: list[tuple[Ref, Event]], stored: int
    ) -> pgbatch.Columns | None:
        """:meth:`columns` by the C builder, or None (nothing changed) when an event is not
        plain. The back-pointers are worked out here first, as the Python loop does."""
        size, last_for_subject = self.size, self.last_for_subject
        learned: dict[str, int] = {}
        prev_subjects: list[int | None] = []
        for i, (_, event) in enumerate(events):
            subject = event.subject
            if subject is None:
                prev_subjects.append(None)
                continue
            prev_subjects.append(
                learned[subject] if subject in learned else last_for_subject[subject]
            )
            learned[subject] = size + i
        fields = [_EVENT_VALUES(event) for _, event in events]
        refs = [ref for ref, _ in events]
        kept: list[str | None] = [*map(str, refs[:stored]), *([None] * (len(refs) - stored))]
        out = builder.leaves(
            fields, kept, size, self.last_hash, self.time_ms, self.node, prev_subjects,
            self.frontier.nodes, store.STRATUM,
        )
        if out is None:
            return None
        leaves, hashes, frontier, new_nodes, entries_copy, nodes_copy = out
        self.frontier.nodes = frontier
        self.nodes.extend(new_nodes)
        last_for_subject.update(learned)
        n = len(events)
        self.done.update(zip(refs, range(size, size + n), strict=True))
        self.size, self.last_hash = size + n, hashes[-1]
        return pgbatch.Columns(
            idx=list(range(size, size + n)),
            leaf=leaves,
            leaf_hash=hashes,
            ref=kept,
            kind=[f[0] for f in fields],
            actor=[f[1] for f in fields],
            subject=[f[3] for f in fields],
            copy=(entries_copy, nodes_copy),
        )
