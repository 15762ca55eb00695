"""The PostgreSQL node's in-process figures, with its server stopped: inclusion proofs,
the ledger export and ``certex audit verify`` at the seeded size, and ledger appends."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from bench.config import APPEND_CALLERS, APPEND_CALLERS_MANY, TARGETS
from bench.procs import json_run, log
from bench.servers import NodeHome, PgDatabase

if TYPE_CHECKING:
    from bench.run import Bench


def ledger_figures(b: Bench, home: NodeHome, db: PgDatabase, world: dict[str, Any]) -> None:
    m = b.mode
    env = home.env()
    b.section = "PostgreSQL node, in-process (server stopped)"
    log("inclusion proofs in-process")
    inc = json_run([sys.executable, "-m", "bench.tasks", "inclusion",
                     str(m.inclusion_samples)], env=env, timeout=120,
                    logfile=b.logs / "task-inclusion.log")
    b.raw["inclusion-inprocess"] = inc
    size = inc["checkpoint_size"]
    scale = "" if size >= 1_000_000 else " (quick mode: synthetic ledger smaller than 1M)"
    b.fig(f"inclusion proof in-process at {size:,}: p99", inc["p99_ms"], "ms",
             target=f"≤ {TARGETS['inclusion-p99-ms']:.0f} ms",
             met=inc["p99_ms"] <= TARGETS["inclusion-p99-ms"],
             note=f"proofs.inclusion, p50 {inc['p50_ms']:.2f} ms, {inc['samples']} random "
                  f"indices, path {inc['path_length']} hashes{scale}")
    log("ledger export + audit: library, then the certex CLI verbs")
    aud = json_run([sys.executable, "-m", "bench.tasks", "audit", str(b.work)],
                    env=env, timeout=900, logfile=b.logs / "task-audit.log")
    b.raw["audit"] = aud
    n = aud["audited_size"]
    cli = _audit_cli(b, home, aud["vkey"])
    h = json_run([sys.executable, "-m", "bench.limits", "hashlib", str(n)], env=None,
                  timeout=300, logfile=b.logs / "limit-hashlib-n.log")
    b.raw["hashlib-n"] = h
    scale = "" if n >= 1_000_000 else "; quick mode: fewer than 1,000,000 entries"
    scanner = aud.get("scanner", "Python")
    if cli is not None:
        bare = cli["bare"]
        b.ratio_fig(f"certex audit verify at {cli['entries']:,} entries",
                       cli["verify_seconds"], "s", bare["seconds"],
                       at_most=TARGETS["audit"], limit_name="bare hashlib chain+root",
                       note=f"CLI wall time incl. interpreter start; {scanner} scanner; "
                            f"the library call (audit_export) {aud['audit_seconds']:.2f} s at "
                            f"{n:,}; bare "
                            f"over the same bytes (this export's {bare['entries']:,} leaves, "
                            f"{bare['leaf_bytes']:.0f} B each; over ~305-byte synthetic "
                            f"leaves {h['seconds'] * cli['entries'] / n:.3f} s){scale}")
        b.ratio_fig(f"audit_export (library) at {n:,} entries", aud["audit_seconds"], "s",
                       bare["seconds"] * n / max(bare["entries"], 1),
                       limit_name="bare hashlib chain+root",
                       note=f"the same audit without interpreter start and imports; "
                            f"{scanner} scanner")
        b.fig(f"certex ledger export at {cli['entries']:,} entries",
                 cli["export_seconds"], "s",
                 note=f"CLI wall time; export_ledger library call {aud['export_seconds']:.2f}"
                      f" s, {aud['export_bytes'] / 1e6:.0f} MB")
    else:
        b.ratio_fig(f"audit verify at {n:,} entries (library)", aud["audit_seconds"], "s",
                       h["seconds"], at_most=TARGETS["audit"],
                       limit_name="bare hashlib chain+root",
                       note=f"{aud['audit']}: the certex CLI verbs are not available{scale}")
        b.fig(f"ledger export at {n:,} entries (library)", aud["export_seconds"], "s",
                 note=f"{aud['export']}, {aud['export_bytes'] / 1e6:.0f} MB")
    # The headline: events handed straight to the writer (LedgerWriter.append_async) by
    # APPEND_CALLERS asyncio tasks, each awaiting its own index before its next event.
    log(f"ledger appends, direct: {APPEND_CALLERS} asyncio callers, {m.append_seconds} s")
    app = json_run([sys.executable, "-m", "bench.tasks", "appends", str(APPEND_CALLERS),
                     str(m.append_seconds), "direct"], env=env,
                    timeout=m.append_seconds + 120, logfile=b.logs / "task-appends.log")
    b.raw["appends"] = app
    # The same raw COPY limit at this run's own mean batch size, for the note: the
    # writer's batches are larger than the limit's fixed batch, and a raw COPY of larger
    # batches is faster still.
    same = max(1, round(app["mean_batch"]))
    ins = json_run([sys.executable, "-m", "bench.limits", "pg-insert", db.url, str(same),
                     "1.5"], env=None, timeout=60,
                    logfile=b.logs / "limit-pg-insert-appends-batch.log")
    b.raw["pg-insert-appends-batch"] = ins
    # How much of the raw limit the ledger's own indexes leave: the same COPY at the limit's
    # batch size into an empty table laid out as ledger_entries (a reading aid, not a limit).
    layout = json_run([sys.executable, "-m", "bench.limits", "pg-insert-ledger-layout", db.url,
                        str(m.append_threads), "1.5"], env=None, timeout=60,
                       logfile=b.logs / "limit-pg-insert-ledger-layout.log")
    b.raw["pg-insert-ledger-layout"] = layout
    # What no writer could beat with these callers: the callers alone (a writer whose batches
    # commit nothing) and the rows' own COPY and commit at this run's mean batch size.
    log(f"limit: the {APPEND_CALLERS} callers alone, and the layout's COPY of {same} rows")
    alone = json_run([sys.executable, "-m", "bench.tasks", "callers-alone", str(APPEND_CALLERS),
                       str(min(m.append_seconds, 5.0))], env=env,
                      timeout=m.append_seconds + 120, logfile=b.logs / "limit-callers-alone.log")
    b.raw["callers-alone"] = alone
    same_layout = json_run([sys.executable, "-m", "bench.limits", "pg-insert-ledger-layout",
                             db.url, str(same), "1.5"], env=None, timeout=60,
                            logfile=b.logs / "limit-pg-insert-ledger-layout-appends-batch.log")
    b.raw["pg-insert-ledger-layout-appends-batch"] = same_layout
    raw_rate = b.raw.get("pg_insert_rate")
    floor_note = _floor_note(alone, same_layout, raw_rate)
    layout_note = (
        f"; the same COPY into an empty table laid out as ledger_entries ({layout['indexes']} "
        f"indexes, no subtree rows, head or checkpoint) {layout['rows_per_s']:,.0f} rows/s"
        + (f" = {layout['rows_per_s'] / raw_rate:.2f}× the raw limit, appends "
           f"{app['per_s'] / layout['rows_per_s']:.2f}× of it" if raw_rate else "")
    )
    # How close the callers keep the lock busy: the writer's transaction holds it from the
    # lock to the commit, so batches of this size cannot go faster than back to back.
    held_note = (
        f"; the writer's transaction (the lock held: reads, leaves, writes, commit) "
        f"{app['transaction_ms']:.2f} ms a batch, so back to back at most "
        f"≈ {app['back_to_back_per_s']:,.0f}/s"
        + (f" = {app['back_to_back_per_s'] / raw_rate:.2f}× the raw limit" if raw_rate else "")
        + f", appends {app['per_s'] / app['back_to_back_per_s']:.2f}× of that"
        if app.get("back_to_back_per_s") else ""
    )
    cpu_note = _cpu_note(app.get("cpu_us"), b.raw["pg-insert"].get("cpu_us"), raw_rate)
    b.ratio_fig("ledger appends, durable, concurrent", app["per_s"], "appends/s",
                   b.raw.get("pg_insert_rate"), at_least=TARGETS["appends"],
                   limit_name="raw batched INSERT",
                   note=f"direct path: {app['callers']} asyncio tasks ({app['loop']}) each "
                        f"awaiting LedgerWriter.append_async for one event at a time, one "
                        f"Node; answered after commit; mean batch {app['mean_batch']:.1f}, "
                        f"wait p50 {app['p50_ms']:.1f} ms p99 {app['p99_ms']:.1f} ms, "
                        f"process {app['cpu_cores']:.2f} cores; raw INSERT at the same "
                        f"batch size ({same} rows) {ins['rows_per_s']:,.0f} rows/s = "
                        f"{app['per_s'] / ins['rows_per_s']:.2f}×" + layout_note + held_note
                        + floor_note + cpu_note
                        + (f"; ERRORS {app['errors']}" if app["errors"] else ""))
    # Sensitivity, no target: the same measure with eight times the callers (larger batches,
    # longer waits), so that each run shows how far the ratio is from one caller count.
    many_seconds = min(m.append_seconds, 8.0)
    log(f"ledger appends, direct: {APPEND_CALLERS_MANY} asyncio callers, {many_seconds} s")
    many = json_run([sys.executable, "-m", "bench.tasks", "appends", str(APPEND_CALLERS_MANY),
                      str(many_seconds), "direct"], env=env, timeout=many_seconds + 120,
                     logfile=b.logs / "task-appends-many.log")
    b.raw["appends-many"] = many
    b.ratio_fig(f"ledger appends with {APPEND_CALLERS_MANY} callers (sensitivity, no target)",
                   many["per_s"], "appends/s", b.raw.get("pg_insert_rate"),
                   limit_name="raw batched INSERT",
                   note=f"the figure above with {many['callers']} callers: mean batch "
                        f"{many['mean_batch']:.0f}, wait p50 {many['p50_ms']:.1f} ms p99 "
                        f"{many['p99_ms']:.1f} ms, transaction {many['transaction_ms']:.2f} ms"
                        " a batch; the target is judged at "
                        f"{APPEND_CALLERS} callers, against a raw limit that commits "
                        f"{m.append_threads} rows at a time"
                        + (f"; ERRORS {many['errors']}" if many["errors"] else ""))
    log(f"ledger appends, outbox: {m.append_threads} threads, {m.append_seconds} s")
    box = json_run([sys.executable, "-m", "bench.tasks", "appends",
                     str(m.append_threads), str(m.append_seconds), "outbox"], env=env,
                    timeout=m.append_seconds + 120,
                    logfile=b.logs / "task-appends-outbox.log")
    b.raw["appends-outbox"] = box
    b.ratio_fig("ledger appends via the outbox (request-handler path)", box["per_s"],
                   "appends/s", b.raw.get("pg_insert_rate"),
                   limit_name="raw batched INSERT",
                   note=f"{box['threads']} threads log_event+commit+commit_wait through one "
                        f"Node (each its own ORM transaction); mean batch "
                        f"{box['mean_batch']:.1f}, wait p50 {box['p50_ms']:.0f} ms p99 "
                        f"{box['p99_ms']:.0f} ms, process {box['cpu_cores']:.2f} cores"
                        + (f"; ERRORS {box['errors']}" if box["errors"] else ""))


def _audit_cli(b: Bench, home: NodeHome, vkey: str) -> dict[str, Any] | None:
    """``certex ledger export`` then ``certex audit verify``, each timed as a process."""
    path = b.work / "ledger-export-cli.jsonl"
    try:
        t0 = time.monotonic()
        home.certex(["ledger", "export", "--out", str(path)],
                    b.logs / "cli-ledger-export.log", timeout=900)
        t1 = time.monotonic()
        out, _ = home.certex(["audit", "verify", str(path), "--vkey", vkey],
                             b.logs / "cli-audit-verify.log", timeout=900)
        t2 = time.monotonic()
        ok = next((ln for ln in out.splitlines() if ln.startswith(("OK", "FAIL"))), "")
        if not ok.startswith("OK"):
            raise RuntimeError(f"certex audit verify did not pass: {ok or out[-500:]}")
        # The limit over the same bytes: this very file's leaves, hashed bare.
        bare = json_run([sys.executable, "-m", "bench.limits", "hashlib-export",
                          str(path)], env=None, timeout=600,
                         logfile=b.logs / "limit-hashlib-export.log")
    except RuntimeError as e:
        if "did not pass" in str(e):
            raise
        log(f"certex ledger export / audit verify unavailable: {str(e)[:300]}")
        return None
    finally:
        entries = max(0, sum(1 for _ in path.open()) - 2) if path.exists() else 0
        path.unlink(missing_ok=True)
    b.raw["hashlib-export"] = bare
    result: dict[str, Any] = {"export_seconds": t1 - t0, "verify_seconds": t2 - t1,
                              "entries": entries, "result": ok, "bare": bare}
    b.raw["audit_cli"] = result
    return result


def _floor_note(alone: dict[str, Any], layout: dict[str, Any], raw_rate: float | None) -> str:
    """The most these callers could append with no writer at all: a cycle of theirs with a
    writer that commits nothing, plus the COPY and commit of the batch's entry rows into an
    empty table laid out as ``ledger_entries`` — each entry costing its share of both."""
    if not alone.get("per_s") or not layout.get("rows_per_s"):
        return ""
    per_entry = 1 / alone["per_s"] + layout["commit_ms"] / 1000 / layout["batch"]
    floor = 1 / per_entry
    return (f"; with no writer at all (the callers alone {alone['per_s']:,.0f}/s, a batch's "
            f"rows COPYed and committed into the empty layout {layout['commit_ms']:.2f} ms for "
            f"{layout['batch']}) at most ≈ {floor:,.0f}/s"
            + (f" = {floor / raw_rate:.2f}× the raw limit" if raw_rate else ""))


def _cpu_note(app: dict[str, float | None] | None, raw: dict[str, float | None] | None,
              raw_rate: float | None) -> str:
    """What the CPU an append costs allows: the node process's and the database backends'
    µs an entry against a raw row's (its client's and its backend's), and the most appends
    the machine's cores could make at that cost if every one of them were always busy."""
    p, s = (app or {}).get("process"), (app or {}).get("server")
    rc, rs = (raw or {}).get("client"), (raw or {}).get("server")
    if p is None or s is None or rc is None or rs is None:
        return ""  # the database is on another host: its backends' CPU is not ours to read
    cores = len(os.sched_getaffinity(0))
    most = cores * 1e6 / (p + s)
    return (f"; CPU an append {p:.1f} µs in the process + {s:.1f} µs in PostgreSQL = "
            f"{p + s:.1f} µs, a raw row's {rc:.1f} + {rs:.1f} = {rc + rs:.1f} µs "
            f"({(p + s) / (rc + rs):.1f}×): with all {cores} cores always busy at most "
            f"≈ {most:,.0f}/s" + (f" = {most / raw_rate:.2f}× the raw limit" if raw_rate else ""))
