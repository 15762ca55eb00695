"""A bounded, self-stopping HTTP/1.1 load generator, run as its own process.

``python -m bench.loadgen SPEC.json`` reads a spec (host, port, connections, warmup,
duration, requests) and prints one JSON line: completed requests and status codes inside
the measured window, the rate, latency percentiles and the generator's own CPU use.

Two clients:

* ``raw`` (default): one ``asyncio.Protocol`` per keep-alive connection on uvloop, requests
  pre-encoded to bytes, each response parsed just enough (status, Content-Length or
  chunked) to know it is complete, the next request written from the ``data_received``
  callback. No coroutine switch per request: it is several times faster than the server
  it measures, which the calibration run shows.
* ``httpx``: ``httpx.AsyncClient`` with one task per connection, for comparison only.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process on the machine):
the spec's ``start_at`` tells when the warmup begins, so the orchestrator can read the
server's CPU over exactly the measured window.

Closed loop: each connection has one request outstanding. A request counts if it completes
inside the measured window (its latency may have started in the warmup). Requests are taken
round-robin from the spec's list, so per-request bodies (different subjects, consents,
indices) are sent without any work in the hot loop. Everything is bounded: the run stops sending at
``warmup + duration``, waits at most ``drain`` seconds for answers, and never reconnects
more than ``max_reconnects`` times.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, cast


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"

    def encode(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.body or self.method in ("POST", "PUT"):
            lines += [f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path,
                "body": base64.b64encode(self.body).decode(), "headers": list(self.headers),
                "content_type": self.content_type}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Request:
        return cls(d["method"], d["path"], base64.b64decode(d["body"]),
                   tuple((k, v) for k, v in d["headers"]), d["content_type"])


class _Stats:
    def __init__(self, warmup_end: float, end: float) -> None:
        self.warmup_end = warmup_end
        self.end = end
        self.latencies: list[float] = []
        self.codes: dict[int, int] = {}
        self.errors = 0
        self.reconnects = 0
        self.first_error = ""

    def record(self, t0: float, t1: float, code: int) -> None:
        # Completions inside the window, whenever they were sent: the steady-state rate.
        # (Counting only requests sent *and* answered inside it under-counts by about
        # latency / window, and drops the slowest requests from the percentiles.)
        if self.warmup_end <= t1 <= self.end:
            self.latencies.append(t1 - t0)
            self.codes[code] = self.codes.get(code, 0) + 1

    def error(self, what: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = what


class _Conn(asyncio.Protocol):
    """One keep-alive connection with one request in flight."""

    def __init__(self, gen: _RawGenerator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.t0 = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.send()

    def send(self) -> None:
        gen = self.gen
        if time.monotonic() >= gen.stats.end or gen.stopping:
            self.busy = False
            gen.conn_done(self)
            return
        gen.i += 1
        self.busy = True
        self.t0 = time.monotonic()
        assert self.transport is not None
        self.transport.write(gen.payloads[gen.i % len(gen.payloads)])

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buf[:head_end]).lower()
            code = int(head[9:12])
            cl = head.find(b"\r\ncontent-length:")
            if cl >= 0:
                eol = head.find(b"\r\n", cl + 2)
                length = int(head[cl + 17 : eol if eol >= 0 else None])
                total = head_end + 4 + length
                if len(buf) < total:
                    return
                del buf[:total]
            elif b"transfer-encoding: chunked" in head:
                end = buf.find(b"\r\n0\r\n\r\n", head_end)
                if end < 0:
                    return
                del buf[: end + 7]
            else:
                del buf[: head_end + 4]
            self.gen.stats.record(self.t0, time.monotonic(), code)
            if b"connection: close" in head:
                self.busy = False
                assert self.transport is not None
                self.transport.close()
                return
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        gen = self.gen
        if self.busy:
            gen.stats.error(f"connection lost: {exc!r}")
        gen.conn_lost(self)


class _RawGenerator:
    def __init__(self, spec: dict[str, Any], stats: _Stats) -> None:
        self.spec = spec
        self.stats = stats
        host = f"{spec['host']}:{spec['port']}"
        self.payloads = [Request.from_json(r).encode(host) for r in spec["requests"]]
        self.i = 0
        self.stopping = False
        self.open: set[_Conn] = set()
        self.done = asyncio.Event()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_connection(
                lambda: _Conn(self), self.spec["host"], self.spec["port"]
            )
            self.open.add(proto)
        except OSError as e:
            self.stats.error(f"connect: {e!r}")
            self._check_done()

    def conn_done(self, conn: _Conn) -> None:
        if conn.transport is not None:
            conn.transport.close()

    def conn_lost(self, conn: _Conn) -> None:
        self.open.discard(conn)
        if (not self.stopping and time.monotonic() < self.stats.end
                and self.stats.reconnects < self.spec.get("max_reconnects", 1000)):
            self.stats.reconnects += 1
            asyncio.get_running_loop().create_task(self.connect())
            return
        self._check_done()

    def _check_done(self) -> None:
        if not self.open:
            self.done.set()

    async def run(self) -> None:
        await asyncio.gather(*(self.connect() for _ in range(self.spec["connections"])))
        remaining = self.stats.end - time.monotonic() + self.spec.get("drain", 10.0)
        try:
            await asyncio.wait_for(self.done.wait(), timeout=max(0.1, remaining))
        except TimeoutError:
            self.stats.error("drain timeout")
        self.stopping = True
        for c in list(self.open):
            if c.transport is not None:
                c.transport.abort()


async def _httpx_run(spec: dict[str, Any], stats: _Stats) -> None:
    import httpx

    reqs = [Request.from_json(r) for r in spec["requests"]]
    base = f"http://{spec['host']}:{spec['port']}"
    counter = [0]
    limits = httpx.Limits(max_connections=spec["connections"],
                          max_keepalive_connections=spec["connections"])
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while time.monotonic() < stats.end:
                counter[0] += 1
                r = reqs[counter[0] % len(reqs)]
                headers = dict(r.headers)
                if r.body:
                    headers["Content-Type"] = r.content_type
                t0 = time.monotonic()
                try:
                    resp = await client.request(r.method, r.path, content=r.body or None,
                                                headers=headers)
                except httpx.HTTPError as e:
                    stats.error(repr(e))
                    continue
                stats.record(t0, time.monotonic(), resp.status_code)

        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(spec["connections"]))),
            timeout=stats.end - time.monotonic() + spec.get("drain", 10.0),
        )


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    client = spec.get("client", "raw")
    if client == "raw":
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            pass
    # All processes share CLOCK_MONOTONIC, so the orchestrator knows the exact window.
    start = max(spec.get("start_at", 0.0), time.monotonic() + 0.05)
    time.sleep(max(0.0, start - time.monotonic() - 0.5))  # connect during the warmup only
    stats = _Stats(start + spec["warmup"], start + spec["warmup"] + spec["duration"])

    async def main() -> tuple[float, float]:
        if client == "raw":
            gen = _RawGenerator(spec, stats)
            task = asyncio.get_running_loop().create_task(gen.run())
        else:
            task = asyncio.get_running_loop().create_task(_httpx_run(spec, stats))
        # The generator's own CPU over exactly the measured window.
        await asyncio.sleep(max(0.0, stats.warmup_end - time.monotonic()))
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        await asyncio.sleep(max(0.0, stats.end - time.monotonic()))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.monotonic() - t0
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        await task
        return cpu, wall

    cpu, wall = asyncio.run(main())
    lat = sorted(stats.latencies)
    if spec.get("latency_file"):
        from array import array

        with open(spec["latency_file"], "wb") as f:
            array("d", lat).tofile(f)
    ok = sum(n for c, n in stats.codes.items() if 200 <= c < 300)
    duration = spec["duration"]
    return {
        "client": client,
        "connections": spec["connections"],
        "duration": duration,
        "completed": len(lat),
        "ok": ok,
        "codes": {str(k): v for k, v in sorted(stats.codes.items())},
        "rate": len(lat) / duration,
        "ok_rate": ok / duration,
        "p50_ms": _percentile(lat, 50) * 1000,
        "p90_ms": _percentile(lat, 90) * 1000,
        "p99_ms": _percentile(lat, 99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else float("nan"),
        "errors": stats.errors,
        "first_error": stats.first_error,
        "reconnects": stats.reconnects,
        "cpu_s": cpu,
        "cpu_cores": cpu / wall if wall > 0 else 0.0,
        "pid": os.getpid(),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.loadgen SPEC.json", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        spec = json.load(f)
    if spec["host"] != "127.0.0.1":
        print("the load generator only talks to 127.0.0.1", file=sys.stderr)
        return 2
    print(json.dumps(run_spec(spec)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
