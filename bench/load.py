"""One load phase: start the generator process(es), read every process's CPU over exactly
the measured window, collect rate and latency."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.loadgen import Request


def _busy_jiffies() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat, minus idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / procs.CLK_TCK


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def run_load(
    name: str,
    port: int,
    requests: list[Request],
    *,
    warmup: float,
    duration: float,
    connections: int,
    gen_procs: int,
    workdir: Path,
    server_pids: Callable[[], list[int]],
    db_pids: Callable[[], list[int]] | None = None,
    client: str = "raw",
) -> dict[str, Any]:
    """Closed-loop load on 127.0.0.1:``port``; rates, latency percentiles, CPU by process."""
    start_at = time.monotonic() + 1.0  # time for the generator processes to start
    per = [connections // gen_procs + (1 if i < connections % gen_procs else 0)
           for i in range(gen_procs)]
    gens = []
    for i, conns in enumerate(per):
        spec = {"host": "127.0.0.1", "port": port, "connections": conns, "warmup": warmup,
                "duration": duration, "client": client, "start_at": start_at, "drain": 10.0,
                "requests": [r.to_json() for r in requests],
                "latency_file": str(workdir / f"lat-{name}-{i}.bin")}
        spec_path = workdir / f"spec-{name}-{i}.json"
        spec_path.write_text(json.dumps(spec))
        out = workdir / f"gen-{name}-{i}.out"
        out.unlink(missing_ok=True)
        gens.append((procs.spawn([sys.executable, "-m", "bench.loadgen", str(spec_path)],
                                 log=out), out, Path(str(spec["latency_file"]))))
    window0 = start_at + warmup
    time.sleep(max(0.0, window0 - time.monotonic()))
    pids = server_pids()
    dbp = db_pids() if db_pids else []
    server = procs.CpuMeter(pids)
    db = procs.CpuMeter(dbp)
    genm = procs.CpuMeter([g.pid for g, _, _ in gens])
    server.start()
    db.start()
    genm.start()
    busy0 = _busy_jiffies()
    time.sleep(max(0.0, window0 + duration - time.monotonic()))
    s_cpu, wall = server.stop()
    if db_pids:
        db.join(db_pids())  # backends the node's pool opened during the window count too
    d_cpu, _ = db.stop()
    g_cpu, _ = genm.stop()
    busy = _busy_jiffies() - busy0
    results = []
    for proc, out, _ in gens:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            procs.stop(proc)
            raise RuntimeError(
                f"load generator for {name} did not stop\n{procs.tail(out)}"
            ) from None
        procs.stop(proc)
        lines = [ln for ln in out.read_text().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"load generator for {name} failed\n{procs.tail(out)}")
        results.append(json.loads(lines[-1]))
    lat: list[float] = []
    for _, _, lat_file in gens:
        a = array("d")
        with lat_file.open("rb") as f:
            a.frombytes(f.read())
        lat.extend(a)
        lat_file.unlink()
    lat.sort()
    codes: dict[str, int] = {}
    for r in results:
        for k, v in r["codes"].items():
            codes[k] = codes.get(k, 0) + v
    ok = sum(r["ok"] for r in results)
    return {
        "phase": name,
        "client": client,
        "connections": connections,
        "gen_procs": gen_procs,
        "duration": duration,
        "completed": len(lat),
        "rate": len(lat) / duration,
        "ok_rate": ok / duration,
        "codes": codes,
        "errors": sum(r["errors"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
        "p50_ms": _percentile(lat, 50) * 1000,
        "p90_ms": _percentile(lat, 90) * 1000,
        "p99_ms": _percentile(lat, 99) * 1000,
        "server_cores": s_cpu / wall,
        "server_sys_cores": server.sys_seconds / wall,
        "server_pids": pids,
        "db_cores": d_cpu / wall if dbp else None,
        "gen_cores": g_cpu / wall,
        "gen_cores_self": sum(r["cpu_cores"] for r in results),
        "machine_busy_cores": busy / wall,
        "other_cores": max(0.0, busy / wall - (s_cpu + d_cpu + g_cpu) / wall),
    }
