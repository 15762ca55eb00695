"""The machine's own limits, measured in the same run as the node's figures.

``python -m bench.limits ed25519 | hashlib N | hashlib-export FILE | pg-insert URL
ROWS_PER_BATCH SECONDS | pg-insert-ledger-layout URL ROWS_PER_BATCH SECONDS``, each printing
one JSON line. Bare means bare: no framework, no ORM, no JSON (in the timed part).
``pg-insert-ledger-layout`` is not a machine limit but a reading aid: the raw COPY again,
into a table with the ledger's own indexes, so that a report can say how much of the gap
between appends and the raw limit the layout takes before the writer does anything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from hashlib import sha256
from typing import Any


def ed25519(seconds: float = 0.6) -> dict[str, Any]:
    """Raw pyca/cryptography Ed25519 sign and verify rates over a 300-byte message."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    msg = os.urandom(300)
    sig = key.sign(msg)
    out: dict[str, Any] = {}
    for name, op in (("sign", lambda: key.sign(msg)), ("verify", lambda: pub.verify(sig, msg))):
        n, t0 = 0, time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(200):
                op()
            n += 200
            if time.perf_counter() >= end:
                break
        out[f"{name}_per_s"] = n / (time.perf_counter() - t0)
    return out


def _chained_leaves(n: int) -> list[bytes]:
    """~300-byte leaves, each embedding its predecessor's leaf hash at bytes [12, 44)."""
    body = b"," + b"x" * 259 + b"}"
    leaves, prev = [], b"\0" * 32
    for i in range(n):
        leaf = b'{"i":%07d' % (i % 10_000_000) + prev + body  # 12 + 32 + 261 bytes
        leaves.append(leaf)
        prev = sha256(b"\x00" + leaf).digest()
    return leaves


def hashlib_chain_root(n: int) -> dict[str, Any]:
    """Time to hash n ~300-byte synthetic leaves (RFC 6962 leaf prefix), check each links to
    the previous hash, and fold them into the Merkle root as RootBuilder does."""
    leaves = _chained_leaves(n)
    links = [leaf[12:44] for leaf in leaves]
    t0 = time.perf_counter()
    root = _fold(leaves, links)
    seconds = time.perf_counter() - t0
    return {"entries": n, "seconds": seconds, "per_s": n / seconds,
            "leaf_bytes": len(leaves[0]), "root": root.hex()}


def _fold(leaves: list[bytes], links: list[bytes]) -> bytes:
    """The timed part of both hashlib limits: hash, check the link, fold the root."""
    prev = b"\0" * 32
    stack: list[bytes] = []
    for i, leaf in enumerate(leaves):
        if links[i] != prev:
            raise RuntimeError(f"chain broken at {i}")
        h = sha256(b"\x00" + leaf).digest()
        prev = h
        k = i
        while k & 1:
            h = sha256(b"\x01" + stack.pop() + h).digest()
            k >>= 1
        stack.append(h)
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = sha256(b"\x01" + left + root).digest()
    return root


def hashlib_chain_root_export(path: str) -> dict[str, Any]:
    """The bare computation over the same bytes ``certex audit verify`` checks: the exact
    leaves of an export file (base64-decoded beforehand, untimed) and the ``prev`` link
    each carries (found and hex-decoded beforehand, untimed); timed: sha256 each leaf,
    compare it with the next leaf's link, fold the Merkle root."""
    import base64

    import orjson

    leaves: list[bytes] = []
    links: list[bytes] = []
    with open(path, "rb") as f:
        next(f)  # the header
        for line in f:
            obj = orjson.loads(line)
            if "leaf" not in obj:
                break  # the checkpoint line
            leaf = base64.b64decode(obj["leaf"], validate=True)
            at = leaf.index(b'"prev":"') + 8
            leaves.append(leaf)
            links.append(bytes.fromhex(leaf[at : at + 64].decode()))
    t0 = time.perf_counter()
    root = _fold(leaves, links)
    seconds = time.perf_counter() - t0
    n = len(leaves)
    return {"entries": n, "seconds": seconds, "per_s": n / seconds if seconds else None,
            "leaf_bytes": sum(map(len, leaves)) / max(n, 1), "root": root.hex()}


def _committed_batches(
    conn: Any,
    batch: int,
    seconds: float,
    rows_at: Callable[[int], list[tuple[Any, ...]]],
    send: Callable[[Any, list[tuple[Any, ...]]], None],
) -> tuple[float, float, dict[str, float | None]]:
    """For ``seconds``, batches of ``batch`` rows (``rows_at(first index)``), each sent by
    ``send(cursor, rows)`` in a transaction of its own and committed: rows/s, ms a batch,
    and the CPU µs a row in this process (``client``) and in its backend (``server``)."""
    from bench.procs import backend_meter

    idx, batches = 0, 0
    backend = backend_meter([conn.info.backend_pid])
    client0, t0 = time.process_time(), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        rows = rows_at(idx)
        with conn.transaction(), conn.cursor() as cur:
            send(cur, rows)
        idx += batch
        batches += 1
    wall = time.perf_counter() - t0
    client = time.process_time() - client0
    server = backend.stop()[0] if backend else None
    cpu = {"client": client / idx * 1e6, "server": None if server is None else server / idx * 1e6}
    return idx / wall, wall / batches * 1000, cpu


def _binary_copy(sql: str, types: list[str]) -> Callable[[Any, list[tuple[Any, ...]]], None]:
    def send(cur: Any, rows: list[tuple[Any, ...]]) -> None:
        with cur.copy(sql) as copy:
            copy.set_types(types)
            for r in rows:
                copy.write_row(r)

    return send


def pg_insert(url: str, batch: int, seconds: float) -> dict[str, Any]:
    """Committed batches of ledger-sized rows (bigint, ~400-byte leaf, 32-byte hash), one
    connection, synchronous_commit on: executemany (pipelined) and binary COPY, each with the
    CPU µs a row it took here and in the backend; ``rows_per_s`` and ``cpu_us`` are the
    faster one's."""
    import psycopg

    url = url.replace("postgresql+psycopg://", "postgresql://")
    out: dict[str, Any] = {"batch": batch}
    leaf = os.urandom(200).hex().encode()[:400]

    def rows_at(idx: int) -> list[tuple[Any, ...]]:
        return [(idx + j, leaf, sha256(leaf + str(idx + j).encode()).digest())
                for j in range(batch)]

    def executemany(cur: Any, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany("INSERT INTO bench_raw (idx, leaf, leaf_hash) VALUES (%s, %s, %s)", rows)

    sends = {"executemany": executemany,
             "copy": _binary_copy("COPY bench_raw (idx, leaf, leaf_hash) FROM STDIN "
                                  "(FORMAT BINARY)", ["int8", "bytea", "bytea"])}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        out["fsync"] = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
        out["synchronous_commit"] = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        out["wal_sync_method"] = conn.execute("SHOW wal_sync_method").fetchone()[0]  # type: ignore[index]
        for mode, send in sends.items():
            conn.execute("DROP TABLE IF EXISTS bench_raw")
            conn.execute("CREATE TABLE bench_raw (idx bigint PRIMARY KEY, leaf bytea NOT NULL,"
                         " leaf_hash bytea NOT NULL)")
            out[f"{mode}_rows_per_s"], out[f"{mode}_commit_ms"], out[f"{mode}_cpu_us"] = (
                _committed_batches(conn, batch, seconds, rows_at, send))
        conn.execute("DROP TABLE IF EXISTS bench_raw")
    best = max(sends, key=lambda mode: out[f"{mode}_rows_per_s"])
    out["rows_per_s"], out["cpu_us"] = out[f"{best}_rows_per_s"], out[f"{best}_cpu_us"]
    return out


def pg_insert_ledger_layout(url: str, batch: int, seconds: float) -> dict[str, Any]:
    """What the ledger's own table layout leaves of the raw limit: committed batches of rows
    shaped as direct appends (~400-byte leaf, hash, no ref, a subject from 256 as in
    ``bench.tasks appends``) by binary COPY into an empty table made ``LIKE ledger_entries
    INCLUDING ALL`` — its primary key with the leaf hashes, the partial ref index and the
    subject-prefix index — one connection, synchronous_commit on. No subtree rows, head,
    checkpoint, lock or reads: only the entry rows a batch must write, into a table with no
    history."""
    import psycopg

    from exchange.ledger.leaf import subject_prefix

    url = url.replace("postgresql+psycopg://", "postgresql://")
    leaf = os.urandom(200).hex().encode()[:400]
    subjects = [sha256(f"layout-{i}".encode()).hexdigest() for i in range(256)]
    prefixes = [subject_prefix(s) for s in subjects]

    def rows_at(idx: int) -> list[tuple[Any, ...]]:
        return [(idx + j, leaf, sha256(leaf + str(idx + j).encode()).digest(), None, "pull",
                 "bench-appends", subjects[(idx + j) % 256], 0, prefixes[(idx + j) % 256])
                for j in range(batch)]

    send = _binary_copy(
        "COPY bench_layout (idx, leaf, leaf_hash, ref, kind, actor, subject, time_ms,"
        " subject_prefix) FROM STDIN (FORMAT BINARY)",
        ["int8", "bytea", "bytea", "text", "text", "text", "text", "int8", "int8"],
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("DROP TABLE IF EXISTS bench_layout")
        conn.execute("CREATE TABLE bench_layout (LIKE ledger_entries INCLUDING ALL)")
        indexes = conn.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'bench_layout'::regclass"
        ).fetchone()[0]  # type: ignore[index]
        rows_per_s, commit_ms, cpu = _committed_batches(conn, batch, seconds, rows_at, send)
        conn.execute("DROP TABLE bench_layout")
    return {"batch": batch, "indexes": indexes, "rows_per_s": rows_per_s, "commit_ms": commit_ms,
            "cpu_us": cpu}


def main() -> int:
    what, *args = sys.argv[1:]
    if what == "ed25519":
        r = ed25519()
    elif what == "hashlib":
        r = hashlib_chain_root(int(args[0]))
    elif what == "hashlib-export":
        r = hashlib_chain_root_export(args[0])
    elif what == "pg-insert":
        r = pg_insert(args[0], int(args[1]), float(args[2]))
    elif what == "pg-insert-ledger-layout":
        r = pg_insert_ledger_layout(args[0], int(args[1]), float(args[2]))
    else:
        print(f"unknown limit {what}", file=sys.stderr)
        return 2
    print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
