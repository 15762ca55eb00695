"""A TCP relay that delays every chunk by a fixed time each way: a database on another host.

``python -m bench.netdelay LISTEN_PORT TARGET_HOST:TARGET_PORT DELAY_MS``

Listens on 127.0.0.1:LISTEN_PORT and relays each connection to the target, holding every
chunk read from either side for DELAY_MS before writing it on (order kept), so a round trip
through it costs 2 × DELAY_MS more than without it. The event loop's timers have a
resolution of about a millisecond, so use whole milliseconds; run it with 0 to see what the
relay itself costs. No ``netem`` here (no privileges): this is the stand-in.
"""

from __future__ import annotations

import asyncio
import sys


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await held.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            dst.write(data)
        dst.close()

    sender = asyncio.create_task(forward())
    try:
        while data := await src.read(1 << 16):
            held.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    held.put_nowait((0.0, b""))
    await sender


async def _serve(port: int, host: str, target: int, delay: float) -> None:
    async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection(host, target)
        await asyncio.gather(_pump(r, tw, delay), _pump(tr, w, delay))

    server = await asyncio.start_server(relay, "127.0.0.1", port)
    print(f"relaying 127.0.0.1:{port} → {host}:{target}, {delay * 1000:g} ms each way",
          flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    port, target, delay_ms = sys.argv[1:4]
    host, _, tport = target.rpartition(":")
    serve = _serve(int(port), host or "127.0.0.1", int(tport), float(delay_ms) / 1000)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve)
    else:
        uvloop.run(serve)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
