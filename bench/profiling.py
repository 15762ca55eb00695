"""``python -m bench --profile`` and ``--experiments``: where the time goes, and whether a
candidate fix moves it (see bench/PROFILE.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import procs
from bench.config import Mode
from bench.load import run_load
from bench.procs import log
from bench.requests import build_requests, smoke
from bench.servers import NodeHome, PgDatabase, Server

RESULTS = Path(__file__).resolve().parent / "results"


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
    two baselines."""
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
    finally:
        db.drop()
    lines = ["phase    patch          baseline-1   patched  baseline-2   gain vs mean baseline"]
    for phase, patch in pairs:
        key = "ok_rate"
        b1, p, b2 = (out[f"{phase}/{x}"][key] for x in ("baseline-1", "patched", "baseline-2"))
        lines.append(f"{phase:8s} {patch:14s} {b1:10.0f} {p:9.0f} {b2:11.0f}   "
                     f"×{p / ((b1 + b2) / 2):.2f}")
    summary = "\n".join(lines)
    print(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "experiments.json").write_text(json.dumps(
        {"summary": summary.splitlines(), "runs": out}, indent=1) + "\n")
    return out
