"""In-process measurements against a seeded node's database, each run as its own process:

``python -m bench.tasks appends CALLERS SECONDS [outbox|direct]``  durable ledger appends
    through one :class:`Node` whose group-commit writer appends them. ``outbox`` (default):
    CALLERS threads, each recording an event through ``log_event`` in its own transaction,
    committing, and waiting on ``commit_wait`` — exactly what a request handler does.
    ``direct``: CALLERS asyncio tasks, each awaiting ``LedgerWriter.append_async`` for one
    event at a time (events not tied to a business transaction).
    Either way it reports the writer's transaction (from the lock to the commit: how long
    the lock is held) a batch, and the rate at which such transactions of the mean batch
    could follow each other back to back — about the most any schedule of those batches
    gets, since one writer at a time holds the lock — and the CPU µs an appended entry cost
    in this process and in the database's backends (those read from ``/proc``: only when
    the server runs on this host).
``python -m bench.tasks appends CALLERS SECONDS direct phases``  the same, and where the
    writer's batches went: per batch, the wall and writer-thread CPU time of the read under
    the lock, the leaves, the writes and the whole transaction (commit included).
``python -m bench.tasks writer-alone BATCH BATCHES``  the writer's batch code alone: BATCHES
    ready batches of BATCH direct events through ``BatchAppender.run``, no callers in the
    process — what one writer does when nothing else wants the interpreter.
``python -m bench.tasks inclusion SAMPLES``  ``exchange.ledger.proofs.inclusion`` latency for
    random indices in the whole tree, one connection, sequential calls.
``python -m bench.tasks audit DIR``  ``certex ledger export`` of the whole ledger to a file
    (the library call behind the verb), then the offline audit of that file.
``python -m bench.tasks statements WORLD.json``  SQL statements, commits, round trips and
    pool checkouts per request (issue, verify, pull, status, inclusion), the writer's batch
    included, counted at the driver.

The node comes from the ``CERTEX_*`` environment. Each prints one JSON line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exchange.ledger.leaf import Event
    from exchange.node import Node


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def _phase_timers(only: tuple[str, ...] | None = None) -> Iterator[dict[str, list[float]]]:
    """Wall and calling-thread CPU seconds (and calls) of the writer's batch phases while
    the block runs (``only`` those named): ``{phase: [wall, cpu, calls]}``."""
    from exchange.ledger import append, leaves, pgbatch

    spots = {"read": (pgbatch, "read"), "leaves": (leaves.LeafBatch, "columns"),
             "write": (pgbatch, "write"), "transaction": (append.BatchAppender, "run")}
    if only is not None:
        spots = {k: v for k, v in spots.items() if k in only}
    totals: dict[str, list[float]] = {k: [0.0, 0.0, 0.0] for k in spots}
    saved = {k: getattr(owner, name) for k, (owner, name) in spots.items()}

    def timed(label: str, f: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return f(*a, **k)
            finally:
                t = totals[label]
                t[0] += time.perf_counter() - t0
                t[1] += time.thread_time() - c0
                t[2] += 1
        return wrapper

    for label, (owner, name) in spots.items():
        setattr(owner, name, timed(label, saved[label]))
    try:
        yield totals
    finally:
        for label, (owner, name) in spots.items():
            setattr(owner, name, saved[label])


def _pull_events(node: Node) -> Callable[[int, str], Event]:
    """The appends tasks' events: ``event(k, tag)`` is a granted pull by ``bench-appends``
    about the k-th of 256 subjects (cyclically), its request hash made from ``tag``."""
    from exchange.ledger.leaf import Event
    from exchange.ledger.service import subject_pseudonym

    subjects = [subject_pseudonym(node, f"bench-append-{i}") for i in range(256)]

    def event(k: int, tag: str) -> Event:
        return Event(kind="pull", actor="bench-appends", outcome="granted",
                     subject=subjects[k % len(subjects)],
                     request_sha256=hashlib.sha256(tag.encode()).hexdigest())

    return event


class _CommitsNothing:
    """A writer's batch that commits nothing: every direct event answered at once with the
    next number, no database, no lock. In place of a writer's :class:`BatchAppender` it
    measures the callers alone — the asyncio tasks, ``append_async`` and the writer thread's
    taking and answering — as a limit, never as a ledger figure."""

    def __init__(self) -> None:
        self.next = 0
        self.batches = 0

    def run(self, refs: list[str], direct: list[tuple[Any, Any]],
            committed: dict[Any, int] | None = None) -> dict[Any, int]:
        done: dict[Any, int] = {} if committed is None else committed
        if direct:
            self.batches += 1
            for ref, _ in direct:
                done[ref] = self.next
                self.next += 1
        return done


def appends(callers: int, seconds: float, path: str = "outbox",
            phases: bool = False, database: bool = True) -> dict[str, Any]:
    """Durable ledger appends through one :class:`Node` and its group-commit writer.

    ``path="outbox"``: ``callers`` threads, each ``log_event`` in its own transaction, commit,
    ``commit_wait`` — what a request handler does. ``path="direct"``: ``callers`` asyncio
    tasks on one event loop (uvloop when installed, as under uvicorn), each awaiting
    ``LedgerWriter.append_async`` for one event at a time — events that are not part of a
    business transaction. Either way a caller counts an append only once it holds its index,
    i.e. after the batch holding its entry committed.

    ``database=False`` (direct only): the same callers against a writer whose batches
    commit nothing (:class:`_CommitsNothing`) — how fast the callers alone go round."""
    from sqlalchemy import func, select, text

    from bench.experiments import apply
    from bench.procs import backend_meter
    from exchange.ledger.service import commit_wait, log_event
    from exchange.node import Node
    from exchange.persistence.models import LedgerCheckpoint, LedgerHead
    from exchange.settings import Settings
    from gateway.app import freeze_startup_objects

    if path not in ("outbox", "direct"):
        raise SystemExit(f"unknown appends path {path!r}: outbox or direct")
    patches = apply()  # CERTEX_BENCH_PATCHES, for --experiments
    node = Node.open(Settings(), pool_size=callers + 2 if path == "outbox" else 4)
    postgres = node.engine.dialect.name == "postgresql"
    timers = contextlib.ExitStack()
    # The transaction (lock, reads, leaves, writes, commit) is always timed: its wall time
    # a batch is how long the lock is held, so batch / that time bounds any schedule.
    totals = timers.enter_context(_phase_timers(None if phases else ("transaction",)))
    writer = node.start_ledger()
    alone = None if database else _CommitsNothing()
    if alone is not None:
        if path != "direct":
            raise SystemExit("the callers alone are measured on the direct path only")
        writer._appender = alone  # type: ignore[assignment]
    freeze_startup_objects()  # as a served node does once started (gateway.app)

    def checkpoints() -> tuple[int, int]:
        """Checkpoints signed and entries in the ledger so far (batches and numbers given,
        for the callers alone)."""
        if alone is not None:
            return alone.batches, alone.next
        with node.engine.connect() as conn:
            signed = conn.execute(select(func.count()).select_from(LedgerCheckpoint))
            size = conn.execute(select(LedgerHead.size))
            return int(signed.scalar_one()), int(size.scalar_one())

    def backends() -> list[int]:
        """The backends serving this database (the writer's among them)."""
        with node.engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend'")).scalars())

    pull_event = _pull_events(node)
    warm_end = time.perf_counter() + 1.0
    end = warm_end + seconds
    counts = [0] * callers
    waits: list[list[float]] = [[] for _ in range(callers)]
    answered: list[list[int]] = [[] for _ in range(callers)]
    errors: list[str] = []

    def event(t: int, i: int) -> Event:
        return pull_event(t * 7 + i, f"{path}/{t}/{i}")

    def measured(t: int, t0: float, t1: float, indices: list[int]) -> None:
        answered[t] += indices
        if t0 >= warm_end and t1 <= end:
            counts[t] += 1
            waits[t].append(t1 - t0)

    def worker(t: int) -> None:  # outbox: one thread per caller
        start_gate.wait()
        i = 0
        try:
            while (t0 := time.perf_counter()) < end:
                with node.sessions.begin() as session:
                    log_event(session, node, event(t, i))
                indices = commit_wait(node, session)
                measured(t, t0, time.perf_counter(), indices)
                i += 1
        except Exception as e:
            errors.append(repr(e))

    async def task(t: int) -> None:  # direct: one asyncio task per caller
        i = 0
        try:
            while (t0 := time.perf_counter()) < end:
                indices = await writer.append_async([event(t, i)])
                measured(t, t0, time.perf_counter(), indices)
                i += 1
        except Exception as e:
            errors.append(repr(e))

    loop_kind = "threads"
    if path == "outbox":
        start_gate = threading.Barrier(callers + 1)
        pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(callers)]
        for th in pool:
            th.start()
        start_gate.wait()
    else:
        import asyncio

        try:
            import uvloop

            loop_kind = "uvloop"
            new_loop: Any = uvloop.new_event_loop
        except ImportError:
            loop_kind = "asyncio"
            new_loop = asyncio.new_event_loop

        async def run_all() -> None:
            await asyncio.gather(*(task(t) for t in range(callers)))

        def run_loop() -> None:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                runner.run(run_all())

        pool = [threading.Thread(target=run_loop, daemon=True)]
        pool[0].start()
    time.sleep(max(0.0, warm_end - time.perf_counter()))
    # Those open once the callers run (the writer's and the pool's): their CPU over the window,
    # when the server runs on this host.
    db = backend_meter(backends()) if postgres and alone is None else None
    (cp0, size0), cpu0, t0 = checkpoints(), _cpu(), time.perf_counter()
    phases0 = {k: list(v) for k, v in totals.items()}
    time.sleep(max(0.0, end - time.perf_counter()))
    (cp1, size1), cpu1, wall = checkpoints(), _cpu(), time.perf_counter() - t0
    if db is not None:
        # A backend the pool opened during the window (the writer takes whichever pooled
        # connection is free, and the bench's own reads may have made a second): its CPU
        # counts too, or the server's share of an append would read as half.
        db.join(backends())
    pg_cpu = db.stop()[0] if db else None
    phases1 = {k: list(v) for k, v in totals.items()}
    for th in pool:
        th.join(timeout=30)
    node.close()
    timers.close()
    done = sum(counts)
    lat = [x for w in waits for x in w]
    batches = max(1, cp1 - cp0)
    told = [i for a in answered for i in a]
    if len(set(told)) != len(told):
        errors.append("an index was answered to two callers")
    per_batch = _per_batch(phases0, phases1)
    held_ms = per_batch["transaction"]["wall"]
    # CPU an entry appended in the window (the head moved by that many), in this process
    # and in the database's backends.
    entries = max(1, size1 - size0)
    return {"path": path, "database": database, "callers": callers, "threads": callers,
            "loop": loop_kind,
            "seconds": seconds, "appends": done, "per_s": done / seconds,
            "p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000,
            "batches": cp1 - cp0, "mean_batch": done / batches,
            "cpu_cores": (cpu1 - cpu0) / wall, "answered": len(told),
            "errors": errors[:3], "patches": patches,
            # Lock held a batch; the rate if transactions of the mean batch ran back to back.
            "transaction_ms": held_ms,
            # CPU µs an entry: this process (callers and writer) and the database's backends.
            "cpu_us": {"process": (cpu1 - cpu0) / entries * 1e6,
                       "server": None if pg_cpu is None else pg_cpu / entries * 1e6},
            "back_to_back_per_s": done / batches / held_ms * 1000 if held_ms else 0.0,
            **({"phases_ms_per_batch": per_batch} if phases else {})}


def _per_batch(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, Any]:
    """Each phase's wall and CPU milliseconds per transaction between two snapshots."""
    n = max(1.0, after["transaction"][2] - before["transaction"][2])
    return {k: {"wall": (after[k][0] - before[k][0]) / n * 1000,
                "cpu": (after[k][1] - before[k][1]) / n * 1000} for k in after}


def writer_alone(batch: int, batches: int) -> dict[str, Any]:
    """``batches`` batches of ``batch`` direct events, made beforehand, appended one after
    another by a :class:`BatchAppender` — the writer's own code and the database, with no
    callers in the process."""
    from exchange.ledger.append import BatchAppender
    from exchange.ledger.writer import ledger_signer
    from exchange.node import Node
    from exchange.settings import Settings
    from gateway.app import freeze_startup_objects

    node = Node.open(Settings(), pool_size=2)
    appender = BatchAppender(node, ledger_signer(node), max_batch=max(batch, 1))
    appender.run([], [])
    event = _pull_events(node)
    prefix = hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:24]
    work = [[(f"{prefix}{b * batch + j:012x}", event(b * batch + j, f"alone/{b}/{j}"))
             for j in range(batch)] for b in range(batches)]
    freeze_startup_objects()
    t0, c0 = time.perf_counter(), time.thread_time()
    for events in work:
        appender.run([], events)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    node.close()
    return {"batch": batch, "batches": batches, "per_s": batch * batches / wall,
            "ms_per_batch": wall / batches * 1000, "cpu_ms_per_batch": cpu / batches * 1000}


def inclusion(samples: int) -> dict[str, Any]:
    from exchange.ledger import merkle, proofs, store
    from exchange.node import Node
    from exchange.settings import Settings
    from gateway.app import freeze_startup_objects

    node = Node.open(Settings(), pool_size=2)
    freeze_startup_objects()  # as a served node does once started (gateway.app)
    rng = random.Random(1)  # bench sampling, not a secret
    times: list[float] = []
    try:
        with node.engine.connect() as conn:
            size = store.tree_size(conn)
            cp = store.latest_checkpoint(conn)
            assert cp is not None
            for _ in range(min(50, samples)):  # warm the connection and caches
                proofs.inclusion(conn, rng.randrange(cp.size), cp.size)
            for _ in range(samples):
                i = rng.randrange(cp.size)
                t0 = time.perf_counter()
                proof = proofs.inclusion(conn, i, cp.size)
                times.append(time.perf_counter() - t0)
            # The last proof really proves: leaf i is in the signed tree.
            from sqlalchemy import select

            from exchange.persistence.models import LedgerEntry

            leaf = conn.execute(select(LedgerEntry.leaf).where(LedgerEntry.idx == i)).scalar_one()
            merkle.verify_inclusion(merkle.leaf_hash(bytes(leaf)), i, cp.size, proof, cp.root)
    finally:
        node.close()
    return {"tree_size": size, "checkpoint_size": cp.size, "samples": samples,
            "p50_ms": _pct(times, 50) * 1000, "p99_ms": _pct(times, 99) * 1000,
            "max_ms": max(times) * 1000, "path_length": len(proof)}


def audit(workdir: Path) -> dict[str, Any]:
    from exchange.ledger.service import verifier_key
    from exchange.node import Node
    from exchange.settings import Settings

    node = Node.open(Settings(), pool_size=2)
    path = workdir / "ledger-export.jsonl"
    out: dict[str, Any] = {}
    try:
        vkey = verifier_key(node)
        t0 = time.perf_counter()
        try:
            from exchange.ledger.export import export_ledger

            with path.open("w") as f:
                summary = export_ledger(node, f)
            out["export"] = "exchange.ledger.export.export_ledger"
            out["entries"] = summary.entries
        except ImportError:
            out["export"] = "bench: store.iter_entries"
            out["entries"] = _export_fallback(node, path)
        out["export_seconds"] = time.perf_counter() - t0
    finally:
        node.close()
    out["export_bytes"] = path.stat().st_size
    out["vkey"] = vkey
    out.update(_audit_file(path, vkey))
    path.unlink()
    return out


def _export_fallback(node: Any, path: Path) -> int:
    import base64

    from exchange.ledger import store

    n = 0
    with node.engine.connect() as conn, path.open("w") as f:
        for e in store.iter_entries(conn):
            f.write(json.dumps({"index": e.index, "leaf": base64.b64encode(e.leaf).decode()})
                    + "\n")
            n += 1
    return n


def _audit_file(path: Path, vkey: str) -> dict[str, Any]:
    """Time the offline audit of an export (the library behind ``certex audit verify``)."""
    from exchange.ledger.note import Verifier

    verifier = Verifier.from_vkey(vkey)
    try:
        from exchange.ledger.audit import audit_export
    except ImportError:
        return _audit_fallback(path)
    try:
        from exchange.ledger.audit.scan import native
    except ImportError:  # before the scanner had a C accelerator
        native = None
    t0 = time.perf_counter()
    with path.open() as f:
        report = audit_export(f, verifier=verifier)
    seconds = time.perf_counter() - t0
    return {"audit": "exchange.ledger.audit.audit_export", "audit_seconds": seconds,
            "audited_size": report.checkpoint.size,
            "scanner": "C (_native)" if native is not None else "Python"}


def _audit_fallback(path: Path) -> dict[str, Any]:
    """No audit module yet: decode_leaf + chain + RootBuilder over the exported entries."""
    import base64

    from exchange.ledger.leaf import decode_leaf
    from exchange.ledger.merkle import RootBuilder, leaf_hash

    t0 = time.perf_counter()
    builder, prev, n = RootBuilder(), b"\0" * 32, 0
    with path.open() as f:
        for line in f:
            obj = json.loads(line)
            if "leaf" not in obj:
                continue
            raw = base64.b64decode(obj["leaf"])
            leaf = decode_leaf(raw)
            if leaf.prev != prev or leaf.index != n:
                raise RuntimeError(f"chain broken at {n}")
            prev = leaf_hash(raw)
            builder.append(prev)
            n += 1
    builder.root()
    return {"audit": "bench: decode_leaf + RootBuilder (no exchange.ledger.audit)",
            "audit_seconds": time.perf_counter() - t0, "audited_size": n}


def statements(world_path: Path) -> dict[str, Any]:
    """SQL statements, commits, round trips and pool checkouts per request, the ledger
    writer's included:
    each request is sent alone through the real app (in-process), after one warm-up, and
    the writer's batch for it (a batch of one) is counted too."""
    import collections
    import warnings

    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from bench.requests import build_requests
    from exchange.node import Node
    from exchange.settings import Settings
    from gateway.app import create_app

    warnings.simplefilter("ignore")
    world = json.loads(world_path.read_text())
    node = Node.open(Settings(), pool_size=5)
    counts: collections.Counter[str] = collections.Counter()
    seen: list[str] = []

    # Counted at the driver, so the statements the ledger writer sends through psycopg
    # itself (pipelined reads and writes, COPY) and through libpq (exchange.ledger.pqwire)
    # are counted with SQLAlchemy's. Round trips: a statement alone is one, a pipeline is one
    # however many it holds, a COPY two; a simple query is one, and one more a COPY in it.
    import psycopg

    from exchange.ledger import pqwire

    def _sent(statement: Any, piped: bool, trips: int) -> None:
        counts["statements"] += 1
        counts["round_trips"] += 0 if piped else trips
        text = statement if isinstance(statement, str) else str(statement)
        seen.append(("| " if piped else "") + " ".join(text.split())[:100])

    cursor_execute, cursor_copy = psycopg.Cursor.execute, psycopg.Cursor.copy
    conn_pipeline = psycopg.Connection.pipeline

    def _execute(self: Any, query: Any, *a: Any, **k: Any) -> Any:
        _sent(query, self.connection._pipeline is not None, 1)
        return cursor_execute(self, query, *a, **k)

    def _copy(self: Any, statement: Any, *a: Any, **k: Any) -> Any:
        _sent(statement, False, 2)
        return cursor_copy(self, statement, *a, **k)

    def _pipeline(self: Any) -> Any:
        counts["round_trips"] += 1
        return conn_pipeline(self)

    wire_pipeline, wire_simple = pqwire.Wire.pipeline, pqwire.Wire.simple

    def _wire_pipeline(self: Any, calls: Any) -> Any:
        counts["round_trips"] += 1
        for stmt, _ in calls:
            _sent(stmt.sql.decode(), True, 1)
        return wire_pipeline(self, calls)

    def _wire_simple(self: Any, sql: bytes, copies: Any = ()) -> Any:
        counts["round_trips"] += 1 + len(copies)
        for part in sql.decode().split(";\n"):
            _sent(part, True, 1)
        return wire_simple(self, sql, copies)

    pqwire.Wire.pipeline = _wire_pipeline  # type: ignore[method-assign]
    pqwire.Wire.simple = _wire_simple  # type: ignore[method-assign]
    psycopg.Cursor.execute = _execute  # type: ignore[method-assign]
    psycopg.Cursor.copy = _copy  # type: ignore[method-assign]
    psycopg.Connection.pipeline = _pipeline  # type: ignore[method-assign]

    @event.listens_for(node.engine, "commit")
    def _commit(_c: Any) -> None:
        counts["commits"] += 1
        counts["round_trips"] += 1

    @event.listens_for(node.engine, "checkout")
    def _checkout(*_: Any) -> None:
        counts["checkouts"] += 1

    out: dict[str, Any] = {}
    base = node.base_url
    with TestClient(create_app(node), base_url=base) as http:
        reqs = build_requests(base, world, post=http.post)
        for phase in ("issue", "verify", "pull", "status", "inclusion"):
            for r in reqs[phase][:2]:
                time.sleep(0.3)  # the writer is idle: the next batch is this request's alone
                counts.clear()
                seen.clear()
                resp = http.request(r.method, r.path, content=r.body or None,
                                    headers={**dict(r.headers), "Content-Type": r.content_type})
                time.sleep(0.3)
            out[phase] = {"status": resp.status_code, **counts, "sql": list(seen)}
            print(f"{phase}: HTTP {resp.status_code}, {counts['statements']} SQL statements, "
                  f"{counts['commits']} commits, {counts['round_trips']} round trips, "
                  f"{counts['checkouts']} pool checkouts ('| ': sent with others, in a"
                  " pipeline or one simple query)")
            if phase in ("pull", "issue"):
                for s in seen:
                    print(f"    {s}")
    node.close()
    return {k: {x: y for x, y in v.items() if x != "sql"} for k, v in out.items()}


def main() -> int:
    what, *args = sys.argv[1:]
    if what == "appends":
        r = appends(int(args[0]), float(args[1]), args[2] if len(args) > 2 else "outbox",
                    phases="phases" in args[3:])
    elif what == "callers-alone":
        r = appends(int(args[0]), float(args[1]), "direct", database=False)
    elif what == "writer-alone":
        r = writer_alone(int(args[0]), int(args[1]))
    elif what == "inclusion":
        r = inclusion(int(args[0]))
    elif what == "audit":
        r = audit(Path(args[0]))
    elif what == "statements":
        r = statements(Path(args[0]))
    else:
        print(f"unknown task {what}", file=sys.stderr)
        return 2
    print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
