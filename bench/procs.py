"""Child processes the bench starts, and what /proc says about them.

Every child runs in its own process group (``start_new_session``) and is registered here, so
:func:`stop_all` (called from ``finally`` blocks, ``atexit`` and the SIGTERM handler) can end
exactly the processes this bench started — uvicorn workers included — and nothing else.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
_children: list[subprocess.Popen[bytes]] = []


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    # uvicorn workers share the group: make sure none outlives its supervisor.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    _kill_group(proc)
    if proc in _children:
        _children.remove(proc)


def stop_all() -> None:
    while _children:
        stop(_children[-1])


def _on_signal(signum: int, _frame: object) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_handlers() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)


def spawn(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output to ``log`` (or discarded)."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            list(cmd),
            cwd=REPO,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    _children.append(proc)
    return proc


def run(
    cmd: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float, log: Path
) -> str:
    """Run ``cmd`` to completion (bounded); its stdout; RuntimeError with the log tail."""
    proc = spawn(cmd, env=env, log=log)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise RuntimeError(f"{cmd[:4]} timed out after {timeout} s\n{tail(log)}") from None
    stop(proc)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({rc})\n{tail(log)}")
    return log.read_text(errors="replace")


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; RuntimeError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered\n"
                               f"{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s\n{tail(log)}")


# -- /proc --------------------------------------------------------------------------------


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, so that ``[k]`` is field
    ``k + 3`` (``[1]`` ppid, ``[11]`` utime, ``[19]`` starttime); None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (uvicorn's supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(entry)
        if stat is None:
            continue
        children.setdefault(int(stat[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds, all its threads (/proc/<pid>/stat 14 and 15)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0, 0.0
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def started_at(pid: int) -> float | None:
    """When ``pid`` started, in seconds since boot (/proc/<pid>/stat 22); None if gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19]) / CLK_TCK


def uptime() -> float:
    """Seconds since boot (/proc/uptime), the clock of :func:`started_at`."""
    return float(Path("/proc/uptime").read_text().split()[0])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``."""
    return sum(cpu_times(pid))


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmHWM`` = peak RSS, ``VmRSS``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes (to report the database's CPU during a phase)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("postgres"):
                out.append(int(entry))
    return out


@dataclass
class CpuMeter:
    """CPU seconds used by a set of processes between :meth:`start` and :meth:`stop`."""

    pids: list[int]
    _t0: float = 0.0
    _boot0: float = 0.0
    _cpu0: dict[int, tuple[float, float]] = field(default_factory=dict)
    sys_seconds: float = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._boot0 = uptime()
        self._cpu0 = {p: cpu_times(p) for p in self.pids}

    def join(self, pids: Iterable[int]) -> list[int]:
        """Also count those of ``pids`` that started after :meth:`start` (a connection a
        pool opened meanwhile): all their CPU was used since. The pids joined."""
        joined = []
        for p in pids:
            began = started_at(p)
            if p not in self._cpu0 and began is not None and began >= self._boot0 - 1 / CLK_TCK:
                self._cpu0[p] = (0.0, 0.0)
                joined.append(p)
        return joined

    def stop(self) -> tuple[float, float]:
        """(CPU seconds used, wall seconds elapsed); kernel time alone in ``sys_seconds``."""
        wall = time.monotonic() - self._t0
        used = 0.0
        self.sys_seconds = 0.0
        for p, (u0, s0) in self._cpu0.items():
            u1, s1 = cpu_times(p)
            if u1 + s1 >= u0 + s0:  # the same process (not a reused pid)
                used += (u1 - u0) + (s1 - s0)
                self.sys_seconds += s1 - s0
        return used, wall


def backend_meter(pids: Iterable[int]) -> CpuMeter | None:
    """A started :class:`CpuMeter` over PostgreSQL backends ``pids`` (from
    ``pg_stat_activity`` or ``backend_pid``) — None when a pid here is not a ``postgres``
    process: the server runs on another host, and its CPU is not ours to read."""
    pids = list(pids)
    for pid in pids:
        try:
            if not Path(f"/proc/{pid}/comm").read_text().startswith("postgres"):
                return None
        except OSError:
            return None
    meter = CpuMeter(pids)
    meter.start()
    return meter


def machine_info() -> dict[str, object]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    load = os.getloadavg()
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def json_run(cmd: list[str], *, env: dict[str, str] | None, timeout: float, logfile: Path
              ) -> dict[str, Any]:
    """Run a bench task that prints its result as a JSON line; that result."""
    out = run(cmd, env=env, timeout=timeout, log=logfile)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{cmd[2:4]} printed no result\n{out[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
