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
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.config import FULL, QUICK, TARGETS, Mode
from bench.federation_figures import federation_figures
from bench.ledger_figures import ledger_figures
from bench.load import run_load
from bench.loadgen import Request
from bench.procs import json_run, log
from bench.profiling import EXPERIMENTS, RESULTS, experiments, profile
from bench.report import Figure, table, write_json
from bench.requests import build_requests, smoke
from bench.servers import NodeHome, PgDatabase, Server, postgres_version


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
        ed = json_run([sys.executable, "-m", "bench.limits", "ed25519"], env=None, timeout=60,
                       logfile=self.logs / "limit-ed25519.log")
        self.raw["ed25519"] = ed
        self.fig("Ed25519 sign (pyca/cryptography)", ed["sign_per_s"], "ops/s",
                 note="300-byte message, one core")
        self.fig("Ed25519 verify (pyca/cryptography)", ed["verify_per_s"], "ops/s")
        h = json_run([sys.executable, "-m", "bench.limits", "hashlib", "1000000"], env=None,
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
        ins = json_run([sys.executable, "-m", "bench.limits", "pg-insert", db.url,
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
        ledger_figures(self, home, db, world)

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
        """Cross-province pull between two SQLite nodes (see :mod:`bench.federation_figures`)."""
        work = self.work
        federation_figures(self, "SQLite", {
            p: f"sqlite:///{work / f'fed{p}-home' / 'var' / 'certex.db'}" for p in ("44", "50")})

    def federation_pg(self) -> None:
        """The same between two PostgreSQL-backed nodes, each with a database of its own.
        Each node's pool holds at most 32 connections (16 request threads + 4, overflow
        12), so both fit in the server's 100 while nothing else uses it."""
        dbs = {p: PgDatabase() for p in ("44", "50")}
        try:
            for db in dbs.values():
                db.create()
            federation_figures(
                self, "PostgreSQL", {p: db.url for p, db in dbs.items()},
                db_pids=lambda: [x for db in dbs.values() for x in db.backend_pids()])
        finally:
            for db in dbs.values():
                log(f"dropping {db.name}")
                db.drop()

    def headroom(self) -> None:
        ceiling = self.raw.get("generator_ceiling")
        if not ceiling or not self.max_rate:
            return
        self.section = "load generator (is it the bottleneck?)"
        self.fig("generator headroom: ceiling / fastest measured phase", ceiling / self.max_rate,
                 "×", target=f"≥ {TARGETS['generator-headroom']:.0f}×",
                 met=ceiling / self.max_rate >= TARGETS["generator-headroom"],
                 note=f"fastest phase {self.max_rate:,.0f} req/s")


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
