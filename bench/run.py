"""``python -m bench --quick | --full | --profile``: measure the node against this machine.

The run starts everything it measures (see ``bench/README.md``): machine limits, a
calibration of the load generator, the bare FastAPI app, a node over its own PostgreSQL
database and one over a SQLite file, each served by uvicorn in its own process and loaded
from separate generator processes on 127.0.0.1. It prints one table and writes
``bench/results/latest.json``. Every child process is ended and the database dropped on
the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.config import FULL, QUICK, Mode
from bench.load import run_load
from bench.loadgen import Request
from bench.report import Figure, table, write_json
from bench.servers import NodeHome, PgDatabase, Server, postgres_version

RESULTS = Path(__file__).resolve().parent / "results"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Targets (DESIGN: ratios against the bare FastAPI endpoint measured in the same run).
TARGETS = {
    "pull-pg": 0.30,
    "pull-sqlite": 0.35,
    "issue": 0.25,
    "verify": 0.35,
    "inclusion-http": 0.5,
    "appends": 0.6,
    "audit": 1.5,  # at most, × bare hashlib
    "inclusion-p99-ms": 2.0,
    "pull-p99-ms": 100.0,
    "rss-mb": 200.0,
    "generator-headroom": 2.0,
}
APPEND_CALLERS = 256  # concurrent callers of the direct ledger-append figure


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _json_run(cmd: list[str], *, env: dict[str, str] | None, timeout: float, logfile: Path
              ) -> dict[str, Any]:
    out = procs.run(cmd, env=env, timeout=timeout, log=logfile)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{cmd[2:4]} printed no result\n{out[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Bench:
    def __init__(self, mode: Mode, workdir: Path) -> None:
        self.mode = mode
        self.work = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.figures: list[Figure] = []
        self.raw: dict[str, Any] = {}
        self.bare_rate: float | None = None
        self.max_rate = 0.0
        self.section = ""

    # -- helpers ---------------------------------------------------------------------------
    def fig(self, figure: str, value: float | None, unit: str, **kw: Any) -> Figure:
        f = Figure(figure, value, unit, section=self.section, **kw)
        self.figures.append(f)
        return f

    def ratio_fig(self, figure: str, value: float | None, unit: str, limit: float | None,
                  at_least: float | None = None, at_most: float | None = None,
                  limit_name: str = "bare FastAPI", note: str = "") -> Figure:
        ratio = value / limit if value is not None and limit else None
        target, met = None, None
        if at_least is not None:
            target = f"≥ {at_least:.2f} × {limit_name}"
            met = ratio is not None and ratio >= at_least
        if at_most is not None:
            target = f"≤ {at_most:.2f} × {limit_name}"
            met = ratio is not None and ratio <= at_most
        return self.fig(figure, value, unit, limit=limit, ratio=ratio, target=target, met=met,
                        note=note)

    def load(self, name: str, server: Server, requests: list[Request],
             db_pids: Callable[[], list[int]] | None = None, **kw: Any) -> dict[str, Any]:
        m = self.mode
        args: dict[str, Any] = {"warmup": m.warmup, "duration": m.duration,
                                "connections": m.connections, "gen_procs": m.gen_procs}
        args.update(kw)
        log(f"load {name}: {args['connections']} connections, {args['duration']} s")
        args.setdefault("server_pids", server.all_pids)
        r = run_load(name, server.port, requests, workdir=self.work, db_pids=db_pids, **args)
        self.raw[name] = r
        if args.get("client", "raw") == "raw" and name != "calibrate-raw":
            self.max_rate = max(self.max_rate, r["rate"])
        bad = {k: v for k, v in r["codes"].items() if not k.startswith("2")}
        if bad or r["errors"]:
            log(f"  {name}: non-2xx {bad}, errors {r['errors']} {r['first_error']}")
        log(f"  {name}: {r['ok_rate']:.0f} req/s ok, p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms, server {r['server_cores']:.2f} cores, "
            f"generator {r['gen_cores']:.2f} cores")
        return r

    def http_figures(self, label: str, r: dict[str, Any], *, at_least: float | None,
                     p99_at_most: float | None = None, about: str = "") -> None:
        bad = {k: v for k, v in r["codes"].items() if not k.startswith("2")}
        note = f"{r['completed']} requests, {r['connections']} connections{about}"
        if bad or r["errors"]:
            note += f"; NOT 2xx: {bad} errors {r['errors']}"
        self.ratio_fig(f"{label}: throughput", r["ok_rate"], "req/s", self.bare_rate,
                       at_least=at_least, note=note)
        self.fig(f"{label}: p50 latency", r["p50_ms"], "ms")
        p99 = self.fig(f"{label}: p99 latency", r["p99_ms"], "ms")
        if p99_at_most is not None:
            p99.target = f"≤ {p99_at_most:.0f} ms at {r['connections']} connections"
            p99.met = r["p99_ms"] <= p99_at_most
        db = f", PostgreSQL backends {r['db_cores']:.2f}" if r.get("db_cores") is not None else ""
        self.fig(f"{label}: server CPU", r["server_cores"], "cores",
                 note=f"kernel {r['server_sys_cores']:.2f} of it; generator "
                      f"{r['gen_cores']:.2f}{db}, other processes "
                      f"{r['other_cores']:.2f} (machine busy {r['machine_busy_cores']:.2f})")

    def rss_figure(self, label: str, server: Server) -> None:
        rss = server.peak_rss_mb()
        self.raw[f"rss-{server.name}"] = rss
        self.fig(f"{label}: peak RSS per worker", rss, "MB",
                 target=f"≤ {TARGETS['rss-mb']:.0f} MB", met=rss <= TARGETS["rss-mb"],
                 note="VmHWM of each serving process, largest")

    # -- sections --------------------------------------------------------------------------
    def machine(self) -> dict[str, Any]:
        info = procs.machine_info()
        try:
            info["postgres"] = postgres_version()
        except Exception as e:
            info["postgres"] = f"unavailable: {e}"
        for pkg in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy",
                    "psycopg", "cryptography", "orjson", "pydantic"):
            try:
                info[pkg] = importlib.metadata.version(pkg)
            except importlib.metadata.PackageNotFoundError:
                info[pkg] = None
        info["mode"] = self.mode.name
        info["uvicorn_workers"] = self.mode.workers
        return info

    def limits(self) -> None:
        self.section = "machine limits (same run)"
        log("limits: Ed25519, hashlib chain + Merkle root")
        ed = _json_run([sys.executable, "-m", "bench.limits", "ed25519"], env=None, timeout=60,
                       logfile=self.logs / "limit-ed25519.log")
        self.raw["ed25519"] = ed
        self.fig("Ed25519 sign (pyca/cryptography)", ed["sign_per_s"], "ops/s",
                 note="300-byte message, one core")
        self.fig("Ed25519 verify (pyca/cryptography)", ed["verify_per_s"], "ops/s")
        h = _json_run([sys.executable, "-m", "bench.limits", "hashlib", "1000000"], env=None,
                      timeout=120, logfile=self.logs / "limit-hashlib.log")
        self.raw["hashlib-1M"] = h
        self.fig("bare hashlib chain + Merkle root, 1,000,000 leaves", h["seconds"], "s",
                 note=f"{h['leaf_bytes']}-byte leaves: sha256 each, check the link, fold")

    def calibrate(self) -> None:
        self.section = "load generator (is it the bottleneck?)"
        port = procs.free_port()
        server = Server("canned", "", port, 1, {}, self.logs, "/")
        server.proc = procs.spawn([sys.executable, "-m", "bench.canned", str(port)],
                                  log=self.logs / "server-canned.log")
        try:
            procs.wait_http(f"http://127.0.0.1:{port}/", server.proc, 20,
                            self.logs / "server-canned.log")
            req = [Request("GET", "/bare")]
            secs = self.mode.calibrate_seconds
            raw = self.load("calibrate-raw", server, req, warmup=0.5, duration=secs)
            hx = self.load("calibrate-httpx", server, req, warmup=0.5, duration=secs,
                           client="httpx")
        finally:
            server.stop()
        self.raw["generator_ceiling"] = raw["rate"]
        self.fig("raw asyncio generator vs canned server", raw["rate"], "req/s",
                 note=f"generator {raw['gen_cores']:.2f} cores, canned server "
                      f"{raw['server_cores']:.2f} cores, p99 {raw['p99_ms']:.1f} ms")
        self.fig("httpx.AsyncClient vs canned server", hx["rate"], "req/s",
                 note=f"same {hx['connections']} connections; generator "
                      f"{hx['gen_cores']:.2f} cores (CPU-bound): not usable as the generator")

    def bare(self) -> None:
        self.section = "machine limits (same run)"
        port = procs.free_port()
        env = {**os.environ, "PYTHONPATH": str(procs.REPO)}
        server = Server("bare", "bench.bare_app:create_app", port, self.mode.workers, env,
                        self.logs, "/bare")
        server.start()
        try:
            r = self.load("bare", server, [Request("GET", "/bare")])
            s = self.load("bare-sync", server, [Request("GET", "/bare-sync")])
            rss = server.peak_rss_mb()
        finally:
            server.stop()
        self.bare_rate = r["ok_rate"]
        self.fig("bare FastAPI async endpoint (the limit)", r["ok_rate"], "req/s",
                 note=f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, server "
                      f"{r['server_cores']:.2f} cores, generator {r['gen_cores']:.2f} cores, "
                      f"RSS {rss:.0f} MB")
        self.fig("bare FastAPI sync (def) endpoint", s["ok_rate"], "req/s",
                 note=f"threadpool hop (a plain def route); p99 {s['p99_ms']:.1f} ms")

    def postgres(self) -> None:
        db = PgDatabase()
        self.raw["pg_database"] = db.name
        try:
            db.create()
            self._postgres(db)
        finally:
            log(f"dropping {db.name}")
            db.drop()

    def _postgres(self, db: PgDatabase) -> None:
        m = self.mode
        home = NodeHome("pg", self.work / "pg-home", db.url, procs.free_port())
        log(f"PostgreSQL node: database {db.name}, certex init")
        self.raw["init_pg"] = home.init(self.logs)
        self.section = "machine limits (same run)"
        log(f"limit: raw batched INSERT, batches of {m.append_threads} rows")
        ins = _json_run([sys.executable, "-m", "bench.limits", "pg-insert", db.url,
                         str(m.append_threads), "1.5"], env=None, timeout=60,
                        logfile=self.logs / "limit-pg-insert.log")
        self.raw["pg-insert"] = ins
        self.raw["pg_insert_rate"] = ins["rows_per_s"]
        self.fig("PostgreSQL raw batched INSERT, ledger-sized rows", ins["rows_per_s"],
                 "rows/s", note=f"{ins['batch']} rows (~400 B leaf + 32 B hash) per committed "
                                f"transaction, synchronous_commit {ins['synchronous_commit']}, "
                                f"fsync {ins['fsync']}; COPY {ins['copy_rows_per_s']:,.0f}, "
                                f"executemany {ins['executemany_rows_per_s']:,.0f}")
        log(f"seeding: {m.ledger_entries:,} synthetic ledger entries, {m.subjects} subjects")
        world = home.seed(self.logs, m.subjects, m.ledger_entries)
        self.raw["world_pg"] = {k: world[k] for k in ("ledger_size", "seed_seconds",
                                                      "synthetic")}
        self.section = (f"PostgreSQL node ({m.workers} uvicorn worker(s), ledger "
                        f"{world['ledger_size']:,} entries)")
        server = Server("node-pg", "gateway.app:create_app", home.port, m.workers, home.env(),
                        self.logs, "/healthz")
        server.start()
        try:
            reqs = build_requests(home.base_url, world)
            results = {}
            for phase in ("issue", "verify", "pull", "status", "inclusion"):
                smoke(home.base_url, reqs[phase][0], phase)
                results[phase] = self.load(f"{phase}-pg", server, reqs[phase],
                                           db_pids=db.backend_pids)
            self.rss_figure("PostgreSQL node", server)
        finally:
            server.stop()
        self.http_figures("issue, PostgreSQL", results["issue"], at_least=TARGETS["issue"])
        self.http_figures("verify, PostgreSQL (credentials presented again: memo)",
                          results["verify"], at_least=TARGETS["verify"])
        self.http_figures("pull, PostgreSQL (consent + durable ledger + receipt)",
                          results["pull"], at_least=TARGETS["pull-pg"],
                          p99_at_most=TARGETS["pull-p99-ms"])
        self.http_figures("status-list fetch, PostgreSQL", results["status"], at_least=None)
        self.http_figures(f"inclusion proof over HTTP at {world['ledger_size']:,}",
                          results["inclusion"], at_least=TARGETS["inclusion-http"],
                          about="; 1,000 distinct random indices, from the node's hash cache "
                                "after the first pass")
        self._ledger(home, db, world)

    def _ledger(self, home: NodeHome, db: PgDatabase, world: dict[str, Any]) -> None:
        m = self.mode
        env = home.env()
        self.section = "PostgreSQL node, in-process (server stopped)"
        log("inclusion proofs in-process")
        inc = _json_run([sys.executable, "-m", "bench.tasks", "inclusion",
                         str(m.inclusion_samples)], env=env, timeout=120,
                        logfile=self.logs / "task-inclusion.log")
        self.raw["inclusion-inprocess"] = inc
        size = inc["checkpoint_size"]
        scale = "" if size >= 1_000_000 else " (quick mode: synthetic ledger smaller than 1M)"
        self.fig(f"inclusion proof in-process at {size:,}: p99", inc["p99_ms"], "ms",
                 target=f"≤ {TARGETS['inclusion-p99-ms']:.0f} ms",
                 met=inc["p99_ms"] <= TARGETS["inclusion-p99-ms"],
                 note=f"proofs.inclusion, p50 {inc['p50_ms']:.2f} ms, {inc['samples']} random "
                      f"indices, path {inc['path_length']} hashes{scale}")
        log("ledger export + audit: library, then the certex CLI verbs")
        aud = _json_run([sys.executable, "-m", "bench.tasks", "audit", str(self.work)],
                        env=env, timeout=900, logfile=self.logs / "task-audit.log")
        self.raw["audit"] = aud
        n = aud["audited_size"]
        cli = self._audit_cli(home, aud["vkey"])
        h = _json_run([sys.executable, "-m", "bench.limits", "hashlib", str(n)], env=None,
                      timeout=300, logfile=self.logs / "limit-hashlib-n.log")
        self.raw["hashlib-n"] = h
        scale = "" if n >= 1_000_000 else "; quick mode: fewer than 1,000,000 entries"
        if cli is not None:
            bare = cli["bare"]
            self.ratio_fig(f"certex audit verify at {cli['entries']:,} entries",
                           cli["verify_seconds"], "s", bare["seconds"],
                           at_most=TARGETS["audit"], limit_name="bare hashlib chain+root",
                           note=f"CLI wall time incl. interpreter start; the library call "
                                f"(audit_export) {aud['audit_seconds']:.2f} s at {n:,}; bare "
                                f"over the same bytes (this export's {bare['entries']:,} leaves, "
                                f"{bare['leaf_bytes']:.0f} B each; over ~305-byte synthetic "
                                f"leaves {h['seconds'] * cli['entries'] / n:.3f} s){scale}")
            self.ratio_fig(f"audit_export (library) at {n:,} entries", aud["audit_seconds"], "s",
                           bare["seconds"] * n / max(bare["entries"], 1),
                           limit_name="bare hashlib chain+root",
                           note="the same audit without interpreter start and imports")
            self.fig(f"certex ledger export at {cli['entries']:,} entries",
                     cli["export_seconds"], "s",
                     note=f"CLI wall time; export_ledger library call {aud['export_seconds']:.2f}"
                          f" s, {aud['export_bytes'] / 1e6:.0f} MB")
        else:
            self.ratio_fig(f"audit verify at {n:,} entries (library)", aud["audit_seconds"], "s",
                           h["seconds"], at_most=TARGETS["audit"],
                           limit_name="bare hashlib chain+root",
                           note=f"{aud['audit']}: the certex CLI verbs are not available{scale}")
            self.fig(f"ledger export at {n:,} entries (library)", aud["export_seconds"], "s",
                     note=f"{aud['export']}, {aud['export_bytes'] / 1e6:.0f} MB")
        # The headline: events handed straight to the writer (LedgerWriter.append_async) by
        # APPEND_CALLERS asyncio tasks, each awaiting its own index before its next event.
        log(f"ledger appends, direct: {APPEND_CALLERS} asyncio callers, {m.append_seconds} s")
        app = _json_run([sys.executable, "-m", "bench.tasks", "appends", str(APPEND_CALLERS),
                         str(m.append_seconds), "direct"], env=env,
                        timeout=m.append_seconds + 120, logfile=self.logs / "task-appends.log")
        self.raw["appends"] = app
        # The same raw COPY limit at this run's own mean batch size, for the note: the
        # writer's batches are larger than the limit's fixed batch, and a raw COPY of larger
        # batches is faster still.
        same = max(1, round(app["mean_batch"]))
        ins = _json_run([sys.executable, "-m", "bench.limits", "pg-insert", db.url, str(same),
                         "1.5"], env=None, timeout=60,
                        logfile=self.logs / "limit-pg-insert-appends-batch.log")
        self.raw["pg-insert-appends-batch"] = ins
        self.ratio_fig("ledger appends, durable, concurrent", app["per_s"], "appends/s",
                       self.raw.get("pg_insert_rate"), at_least=TARGETS["appends"],
                       limit_name="raw batched INSERT",
                       note=f"direct path: {app['callers']} asyncio tasks ({app['loop']}) each "
                            f"awaiting LedgerWriter.append_async for one event at a time, one "
                            f"Node; answered after commit; mean batch {app['mean_batch']:.1f}, "
                            f"wait p50 {app['p50_ms']:.1f} ms p99 {app['p99_ms']:.1f} ms, "
                            f"process {app['cpu_cores']:.2f} cores; raw INSERT at the same "
                            f"batch size ({same} rows) {ins['rows_per_s']:,.0f} rows/s = "
                            f"{app['per_s'] / ins['rows_per_s']:.2f}×"
                            + (f"; ERRORS {app['errors']}" if app["errors"] else ""))
        log(f"ledger appends, outbox: {m.append_threads} threads, {m.append_seconds} s")
        box = _json_run([sys.executable, "-m", "bench.tasks", "appends",
                         str(m.append_threads), str(m.append_seconds), "outbox"], env=env,
                        timeout=m.append_seconds + 120,
                        logfile=self.logs / "task-appends-outbox.log")
        self.raw["appends-outbox"] = box
        self.ratio_fig("ledger appends via the outbox (request-handler path)", box["per_s"],
                       "appends/s", self.raw.get("pg_insert_rate"),
                       limit_name="raw batched INSERT",
                       note=f"{box['threads']} threads log_event+commit+commit_wait through one "
                            f"Node (each its own ORM transaction); mean batch "
                            f"{box['mean_batch']:.1f}, wait p50 {box['p50_ms']:.0f} ms p99 "
                            f"{box['p99_ms']:.0f} ms, process {box['cpu_cores']:.2f} cores"
                            + (f"; ERRORS {box['errors']}" if box["errors"] else ""))

    def _audit_cli(self, home: NodeHome, vkey: str) -> dict[str, Any] | None:
        """``certex ledger export`` then ``certex audit verify``, each timed as a process."""
        path = self.work / "ledger-export-cli.jsonl"
        try:
            t0 = time.monotonic()
            home.certex(["ledger", "export", "--out", str(path)],
                        self.logs / "cli-ledger-export.log", timeout=900)
            t1 = time.monotonic()
            out, _ = home.certex(["audit", "verify", str(path), "--vkey", vkey],
                                 self.logs / "cli-audit-verify.log", timeout=900)
            t2 = time.monotonic()
            ok = next((ln for ln in out.splitlines() if ln.startswith(("OK", "FAIL"))), "")
            if not ok.startswith("OK"):
                raise RuntimeError(f"certex audit verify did not pass: {ok or out[-500:]}")
            # The limit over the same bytes: this very file's leaves, hashed bare.
            bare = _json_run([sys.executable, "-m", "bench.limits", "hashlib-export",
                              str(path)], env=None, timeout=600,
                             logfile=self.logs / "limit-hashlib-export.log")
        except RuntimeError as e:
            if "did not pass" in str(e):
                raise
            log(f"certex ledger export / audit verify unavailable: {str(e)[:300]}")
            return None
        finally:
            entries = max(0, sum(1 for _ in path.open()) - 2) if path.exists() else 0
            path.unlink(missing_ok=True)
        self.raw["hashlib-export"] = bare
        result: dict[str, Any] = {"export_seconds": t1 - t0, "verify_seconds": t2 - t1,
                                  "entries": entries, "result": ok, "bare": bare}
        self.raw["audit_cli"] = result
        return result

    def sqlite(self) -> None:
        m = self.mode
        home = NodeHome("sqlite", self.work / "sqlite-home",
                        f"sqlite:///{self.work / 'sqlite-home' / 'var' / 'certex.db'}",
                        procs.free_port())
        log("SQLite node: certex init, seeding")
        self.raw["init_sqlite"] = home.init(self.logs)
        world = home.seed(self.logs, m.subjects, 0)
        self.section = (f"SQLite node ({m.workers} uvicorn worker(s), WAL, synchronous=FULL, "
                        f"verify memo off)")
        # The verify memo off here (on at the PostgreSQL node): the bench presents the same
        # 64 credentials again and again, which the memo answers without signature checks;
        # this node checks every one in full, as for a credential seen for the first time.
        env = {**home.env(), "CERTEX_VERIFY_MEMO": "0"}
        server = Server("node-sqlite", "gateway.app:create_app", home.port, m.workers,
                        env, self.logs, "/healthz")
        server.start()
        phases = ("pull", "issue", "verify") if m.sqlite_extra else ("pull",)
        try:
            reqs = build_requests(home.base_url, world)
            results = {}
            for phase in phases:
                smoke(home.base_url, reqs[phase][0], phase)
                results[phase] = self.load(f"{phase}-sqlite", server, reqs[phase])
            self.rss_figure("SQLite node", server)
        finally:
            server.stop()
        self.http_figures("pull, SQLite (consent + durable ledger + receipt)", results["pull"],
                          at_least=TARGETS["pull-sqlite"])
        if "issue" in results:
            self.http_figures("issue, SQLite", results["issue"], at_least=TARGETS["issue"])
            self.http_figures("verify, SQLite, memo off (every credential checked in full)",
                              results["verify"], at_least=TARGETS["verify"])

    def federation(self) -> None:
        """Cross-province pull between two SQLite nodes (see :meth:`_federation`)."""
        work = self.work
        self._federation("SQLite", {p: f"sqlite:///{work / f'fed{p}-home' / 'var' / 'certex.db'}"
                                    for p in ("44", "50")})

    def federation_pg(self) -> None:
        """The same between two PostgreSQL-backed nodes, each with a database of its own.
        Each node's pool holds at most 32 connections (16 request threads + 4, overflow
        12), so both fit in the server's 100 while nothing else uses it."""
        dbs = {p: PgDatabase() for p in ("44", "50")}
        try:
            for db in dbs.values():
                db.create()
            self._federation("PostgreSQL", {p: db.url for p, db in dbs.items()},
                             db_pids=lambda: [x for db in dbs.values() for x in db.backend_pids()])
        finally:
            for db in dbs.values():
                log(f"dropping {db.name}")
                db.drop()

    def _federation(self, kind: str, urls: dict[str, str],
                    db_pids: Callable[[], list[int]] | None = None) -> None:
        """A bank at node 50 pulls a Guangdong (44) enterprise's licence under a consent held
        at 44: 50 fetches and checks the consent artefact and its status at 44, logs, forwards
        a signed request; 44 counts the use, logs, releases; the bank gets both receipts."""
        m = self.mode
        tag = "" if kind == "SQLite" else "-pg"
        homes = {p: NodeHome(f"fed{p}{tag}", self.work / f"fed{p}{tag}-home", urls[p],
                             procs.free_port(), province=p) for p in ("44", "50")}
        homes["50"].passphrase = homes["44"].passphrase
        homes["50"].subject_key = homes["44"].subject_key  # one federation subject key
        log(f"federation: two {kind} nodes (44 holds, 50 asks), certex init, federation file")
        for h in homes.values():
            h.init(self.logs)
        fed_file = self.work / f"federation{tag}.json"
        fed_file.write_text(json.dumps({"nodes": {
            p: {"base_url": h.base_url, "jwks": h.jwks()} for p, h in homes.items()}}))
        for h in homes.values():
            h.federation = fed_file
        world = homes["44"].seed(self.logs, m.subjects, 0, "--role", "holder",
                                 "--region", "440106", "--grantee", "50:bank-bench")
        bank = homes["50"].seed(self.logs, 0, 0, "--role", "requester")["bank"]
        servers = [Server(f"node-fed{p}{tag}", "gateway.app:create_app", h.port, m.workers,
                          h.env(), self.logs, "/healthz") for p, h in homes.items()]
        self.section = (f"cross-province pull (two {kind} nodes, {m.workers} uvicorn worker(s) "
                        "each)")
        try:
            for s in servers:
                s.start()
            base = homes["50"].base_url
            token = (("Authorization", f"Bearer {mint_token(base, bank)}"),)
            reqs = [Request("POST", "/v1/pull", json.dumps({
                "subject_id": p["subject_id"], "item_code": world["item_code"],
                "consent_id": p["consent_id"]}).encode(), token) for p in world["subjects"]]
            smoke(base, reqs[0], "pull-federation")
            # Seconds of latency at 64 connections: a longer warmup reaches steady state.
            r = self.load(f"pull-federation{tag}", servers[1], reqs,
                          warmup=max(m.warmup, 3.0), duration=max(m.duration, 6.0),
                          server_pids=lambda: [p for s in servers for p in s.all_pids()],
                          db_pids=db_pids)
            rss = max(s.peak_rss_mb() for s in servers)
        finally:
            for s in servers:
                s.stop()
        on = "" if kind == "SQLite" else f" on {kind}"
        self.http_figures(f"pull 50 → 44{on} (both nodes log, two receipts)", r, at_least=None)
        self.raw[f"rss-federation{tag}"] = rss
        self.fig(f"cross-province nodes{on}: peak RSS per worker", rss, "MB",
                 target=f"≤ {TARGETS['rss-mb']:.0f} MB", met=rss <= TARGETS["rss-mb"])

    def headroom(self) -> None:
        ceiling = self.raw.get("generator_ceiling")
        if not ceiling or not self.max_rate:
            return
        self.section = "load generator (is it the bottleneck?)"
        self.fig("generator headroom: ceiling / fastest measured phase", ceiling / self.max_rate,
                 "×", target=f"≥ {TARGETS['generator-headroom']:.0f}×",
                 met=ceiling / self.max_rate >= TARGETS["generator-headroom"],
                 note=f"fastest phase {self.max_rate:,.0f} req/s")


# -- requests --------------------------------------------------------------------------------


def mint_token(base_url: str, client: dict[str, Any], post: Callable[..., Any] = httpx.post
               ) -> str:
    """A node access token the way a client gets one: RFC 7523 assertion → /oauth2/token."""
    from exchange.clients.tools import client_assertion, signing_key_from_private_jwk

    key = signing_key_from_private_jwk(client["private_jwk"])
    assertion = client_assertion(key, client_id=client["client_id"],
                                 token_url=f"{base_url}/oauth2/token", now=time.time())
    r = post(f"{base_url}/oauth2/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion})
    r.raise_for_status()
    return str(r.json()["access_token"])


def build_requests(base_url: str, world: dict[str, Any], post: Callable[..., Any] = httpx.post
                   ) -> dict[str, list[Request]]:
    def body(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, ensure_ascii=False).encode()

    agency = (("Authorization", f"Bearer {mint_token(base_url, world['agency'], post)}"),)
    bank = (("Authorization", f"Bearer {mint_token(base_url, world['bank'], post)}"),)
    people = world["subjects"]
    rng = random.Random(7)  # which ledger indices to prove: sampling, not a secret
    size = int(world["ledger_size"])
    return {
        "issue": [Request("POST", "/v1/certificates", body({
            "type": "business-license", "subject_id": s, "claims": world["license"]}), agency)
            for s in world["spare_usccs"]],
        "verify": [Request("POST", "/v1/verify", body({"credential": p["credential"]}))
                   for p in people],
        "pull": [Request("POST", "/v1/pull", body({
            "subject_id": p["subject_id"], "item_code": world["item_code"],
            "consent_id": p["consent_id"]}), bank) for p in people],
        "status": [Request("GET", f"/v1/status-lists/{people[0]['status_list']}")],
        "inclusion": [Request("GET", f"/v1/ledger/proof/inclusion?index={rng.randrange(size)}"
                                     f"&size={size}") for _ in range(1000)],
    }


def smoke(base_url: str, req: Request, phase: str) -> None:
    """One request before the load: the phase must do what it claims (2xx, right content)."""
    r = httpx.request(req.method, base_url + req.path, content=req.body or None,
                      headers={**dict(req.headers), "Content-Type": req.content_type},
                      timeout=30)
    if r.status_code // 100 != 2:
        raise RuntimeError(f"{phase}: {req.method} {req.path} → {r.status_code} {r.text[:300]}")
    if phase.startswith("pull") and not ("receipt" in r.json() and r.json()["credentials"]):
        raise RuntimeError(f"pull answered without credentials or receipt: {r.text[:300]}")
    if phase == "pull-federation" and len(r.json().get("receipts", {})) != 2:
        raise RuntimeError(f"a cross-province pull must carry two receipts: {r.text[:300]}")
    if phase == "verify" and r.json().get("valid") is not True:
        raise RuntimeError(f"verify says the seeded credential is invalid: {r.text[:300]}")


# -- profile ---------------------------------------------------------------------------------


def profile(mode: Mode, workdir: Path, seconds: float,
            phases: tuple[str, ...] = ("pull", "issue", "verify")) -> None:
    """py-spy the PostgreSQL node's worker under pull, issue and verify load (folded stacks
    of the GIL holder and of every request thread, and PostgreSQL wait events). With
    ``CERTEX_BENCH_PATCHES`` set, the node runs with those candidate fixes applied."""
    from bench.folded import load as load_folded
    from bench.folded import summarise

    spy = procs.VENV_BIN / "py-spy"
    if not spy.exists():
        raise SystemExit("py-spy is needed: .venv/bin/pip install py-spy")
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    db = PgDatabase()
    try:
        db.create()
        home = NodeHome("pg", workdir / "pg-home", db.url, procs.free_port())
        home.init(logs)
        world = home.seed(logs, mode.subjects, mode.ledger_entries)
        st = procs.run([sys.executable, "-m", "bench.tasks", "statements",
                        str(home.home / "world.json")], env=home.env(), timeout=120,
                       log=logs / "task-statements.log")
        (RESULTS / "statements.txt").write_text(
            "\n".join(ln for ln in st.splitlines() if not ln.startswith(("{", "/", " ")) or
                      ln.startswith("    ")) + "\n")
        patched = bool(os.environ.get("CERTEX_BENCH_PATCHES"))
        app = "bench.experiments:create_app" if patched else "gateway.app:create_app"
        env = {**home.env(), "CERTEX_BENCH_PATCHES": os.environ.get("CERTEX_BENCH_PATCHES", "")}
        server = Server("node-pg", app, home.port, 1, env, logs, "/healthz")
        server.start()
        try:
            reqs = build_requests(home.base_url, world)
            for phase in phases:
                assert server.proc is not None
                tag = "-patched" if patched else ""
                outs = {view: RESULTS / f"profile-{phase}{tag}-{view}.folded"
                        for view in ("wall", "gil")}
                spies = []
                for view, out in outs.items():
                    spy_cmd = [str(spy), "record", "--pid", str(server.proc.pid),
                               "--duration", str(int(seconds)), "--rate", "200", "--format",
                               "raw", "--nonblocking", "--threads", "--output", str(out)]
                    spy_cmd.insert(-2, "--gil" if view == "gil" else "--idle")
                    log(f"profile {phase} ({view}): py-spy {' '.join(spy_cmd[1:])}")
                    spies.append(procs.spawn(spy_cmd, log=logs / f"py-spy-{phase}-{view}.log"))
                waits = WaitSampler(db.url, db.name)
                waits.start()
                r = run_load(f"profile-{phase}", home.port, reqs[phase], warmup=0.5,
                             duration=seconds + 1, connections=mode.connections, gen_procs=1,
                             workdir=workdir, server_pids=server.all_pids)
                waits.stop()
                for rec in spies:
                    rec.wait(timeout=seconds + 60)
                    procs.stop(rec)
                text = [f"# {phase}: {r['ok_rate']:.0f} req/s while profiled, "
                        f"{mode.connections} connections, server {r['server_cores']:.2f} cores, "
                        f"other processes {r['other_cores']:.2f} cores",
                        "", "# ===== PostgreSQL: what this database's backends were doing "
                        f"({waits.samples} samples of pg_stat_activity)", waits.report()]
                for view, out in outs.items():
                    stacks = load_folded(out, None)
                    what = ("CPU: samples of the thread holding the GIL" if view == "gil" else
                            "wall: request threads inside a route, waiting included (--idle)")
                    text += ["", f"# ===== {view} — {what}",
                             "", "## request threads (inside a gateway route)",
                             summarise([s for s in stacks if any("gateway/routers/" in f
                                                                 for f in s[0])], 40),
                             "", "## ledger-writer thread",
                             summarise([s for s in stacks if "ledger-writer" in s[0][0]], 25)]
                (RESULTS / f"profile-{phase}{tag}.txt").write_text("\n".join(text) + "\n")
                out = outs["gil"]
                log(f"  wrote {out} and profile-{phase}{tag}.txt")
        finally:
            server.stop()
    finally:
        db.drop()


class WaitSampler:
    """Samples pg_stat_activity for one database every 20 ms from a thread: the share of
    backends in each (state, wait event) — row locks, the advisory lock, WAL flushes,
    or idle in transaction while the Python side holds them."""

    def __init__(self, url: str, dbname: str) -> None:
        import threading
        from collections import Counter

        self.url = url.replace("postgresql+psycopg://", "postgresql://")
        self.dbname = dbname
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (self.dbname,)).fetchall()
                self.samples += 1
                for state, wtype, wevent in rows:
                    self.counts[f"{state} / {wtype or 'CPU'}:{wevent or '-'}"] += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def report(self) -> str:
        total = sum(self.counts.values()) or 1
        return "\n".join(f"  {100 * n / total:5.1f}%  {k}  (avg {n / max(1, self.samples):.1f}"
                         " backends)" for k, n in self.counts.most_common(12))


# -- experiments ---------------------------------------------------------------------------


EXPERIMENTS: tuple[tuple[str, str], ...] = ()  # the three HTTP candidates have landed


def experiments(mode: Mode, workdir: Path,
                pairs: tuple[tuple[str, str], ...] = EXPERIMENTS) -> dict[str, Any]:
    """Baseline → patched → baseline for each candidate fix (see bench/experiments.py),
    back to back on one seeded PostgreSQL node, so machine noise shows as the spread of the
    two baselines. Ledger appends: the same with ``subject-batch``."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    db = PgDatabase()
    out: dict[str, Any] = {}
    try:
        db.create()
        home = NodeHome("pg", workdir / "pg-home", db.url, procs.free_port())
        home.init(logs)
        world = home.seed(logs, mode.subjects, mode.ledger_entries)
        patches = ",".join(sorted({p for _, p in pairs}))
        for label, app, env_patches in (("baseline-1", "gateway.app:create_app", ""),
                                        ("patched", "bench.experiments:create_app", patches),
                                        ("baseline-2", "gateway.app:create_app", "")):
            env = {**home.env(), "CERTEX_BENCH_PATCHES": env_patches}
            server = Server(f"node-{label}", app, home.port, mode.workers, env, logs,
                            "/healthz")
            server.start()
            try:
                reqs = build_requests(home.base_url, world)
                for phase, _ in pairs:
                    smoke(home.base_url, reqs[phase][0], phase)
                    r = run_load(f"{phase}-{label}", home.port, reqs[phase], warmup=mode.warmup,
                                 duration=mode.duration, connections=mode.connections,
                                 gen_procs=mode.gen_procs, workdir=workdir,
                                 server_pids=server.all_pids)
                    out[f"{phase}/{label}"] = r
                    log(f"{phase:7s} {label:10s} {r['ok_rate']:7.0f} req/s  p50 "
                        f"{r['p50_ms']:5.0f} ms  p99 "
                        f"{r['p99_ms']:6.0f} ms  server {r['server_cores']:.2f} cores  "
                        f"other {r['other_cores']:.2f}")
            finally:
                server.stop()
        for label, env_patches in (("baseline-1", ""), ("patched", "subject-batch"),
                                   ("baseline-2", "")):
            env = {**home.env(), "CERTEX_BENCH_PATCHES": env_patches}
            r = _json_run([sys.executable, "-m", "bench.tasks", "appends",
                           str(mode.append_threads), str(mode.append_seconds)], env=env,
                          timeout=mode.append_seconds + 120,
                          logfile=logs / f"task-appends-{label}.log")
            out[f"appends/{label}"] = r
            log(f"appends {label:10s} {r['per_s']:7.0f} /s  mean batch {r['mean_batch']:.1f}")
    finally:
        db.drop()
    lines = ["phase    patch          baseline-1   patched  baseline-2   gain vs mean baseline"]
    for phase, patch in (*pairs, ("appends", "subject-batch")):
        key = "per_s" if phase == "appends" else "ok_rate"
        b1, p, b2 = (out[f"{phase}/{x}"][key] for x in ("baseline-1", "patched", "baseline-2"))
        lines.append(f"{phase:8s} {patch:14s} {b1:10.0f} {p:9.0f} {b2:11.0f}   "
                     f"×{p / ((b1 + b2) / 2):.2f}")
    summary = "\n".join(lines)
    print(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "experiments.json").write_text(json.dumps(
        {"summary": summary.splitlines(), "runs": out}, indent=1) + "\n")
    return out


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="≤ 3 minutes (the default)")
    g.add_argument("--full", action="store_true", help="1M-entry ledger, longer windows")
    g.add_argument("--profile", action="store_true",
                   help="py-spy the node under pull/issue/verify load into bench/results/")
    g.add_argument("--experiments", action="store_true",
                   help="measure candidate fixes (bench/experiments.py) against baselines")
    p.add_argument("--patch", action="append", default=[], metavar="PHASE=PATCH",
                   help="with --experiments: issue|pull|verify=PATCH (repeatable)")
    p.add_argument("--duration", type=float, help="seconds in each measured window")
    p.add_argument("--workers", type=int, help="uvicorn workers (node and bare app alike)")
    p.add_argument("--connections", type=int, help="concurrent connections")
    p.add_argument("--gen-procs", type=int, help="load generator processes")
    p.add_argument("--skip", default="",
                   help="comma-separated: calibrate,pg,sqlite,federation,federation-pg")
    p.add_argument("--out", type=Path, default=None,
                   help="default: results/latest.json, results/full.json with --full")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    a = p.parse_args(argv)
    mode = FULL if a.full else QUICK
    if a.out is None:
        a.out = RESULTS / ("full.json" if a.full else "latest.json")
    overrides = {k: v for k, v in (("workers", a.workers), ("connections", a.connections),
                                   ("gen_procs", a.gen_procs), ("duration", a.duration),
                                   ("append_seconds", a.duration)) if v}
    if overrides:
        from dataclasses import replace

        mode = replace(mode, **overrides)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    procs.install_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="certex-bench-"))
    t0 = time.monotonic()
    try:
        if a.profile:
            phases = tuple(x for x in ("pull", "issue", "verify") if x not in skip)
            profile(mode, workdir, seconds=8.0, phases=phases)
            return 0
        if a.experiments:
            pairs = (tuple((x.split("=", 1)[0], x.split("=", 1)[-1]) for x in a.patch)
                     if a.patch else EXPERIMENTS)
            experiments(mode, workdir, pairs)
            return 0
        bench = Bench(mode, workdir)
        machine = bench.machine()
        failed: list[str] = []
        sections: list[tuple[str, Callable[[], None]]] = [
            ("limits", bench.limits), ("calibrate", bench.calibrate), ("bare", bench.bare),
            ("pg", bench.postgres), ("sqlite", bench.sqlite), ("federation", bench.federation),
            ("federation-pg", bench.federation_pg)]
        for name, run_section in sections:
            if name in skip:
                continue
            if name in ("pg", "sqlite", "federation", "federation-pg") and bench.bare_rate is None:
                failed.append(f"{name}: skipped, no bare FastAPI limit to divide by")
                continue
            try:
                run_section()
            except Exception as e:  # one broken section must not lose the others' figures
                import traceback

                log(f"section {name} FAILED:\n{traceback.format_exc()}")
                failed.append(f"{name}: {str(e).splitlines()[0][:200] if str(e) else repr(e)}")
                procs.stop_all()
        bench.headroom()
        order = ["load generator", "machine limits", "PostgreSQL node (", "PostgreSQL node,",
                 "SQLite", "cross-province"]
        bench.figures.sort(key=lambda f: next(
            (i for i, o in enumerate(order) if f.section.startswith(o)), len(order)))
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        machine["wall_seconds"] = round(time.monotonic() - t0, 1)
        write_json(a.out, machine, bench.figures, {"raw": bench.raw, "failed": failed})
        print(f"\ncertex bench ({mode.name}) — {machine['cpu_model']}, {machine['cores']} cores, "
              f"PostgreSQL {machine['postgres']}, Python {machine['python']}, "
              f"{mode.workers} uvicorn worker(s), {mode.connections} connections; "
              f"load average {machine['loadavg_at_start']} → {machine['loadavg_at_end']}")
        print(table(bench.figures))
        met = [f for f in bench.figures if f.met is not None]
        print(f"\n{sum(1 for f in met if f.met)}/{len(met)} targets met; "
              f"{machine['wall_seconds']} s; wrote {a.out}")
        for f in failed:
            print(f"SECTION FAILED — {f}")
        return 1 if failed else 0
    finally:
        procs.stop_all()
        if a.keep:
            log(f"work directory kept: {workdir}")
        else:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
