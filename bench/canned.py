"""A canned HTTP/1.1 server: answers every request with the same small JSON, doing nothing
else. Its only use is to measure the load generator's own ceiling (how many requests a
second the generator can complete when the server costs almost nothing).

``python -m bench.canned PORT`` on 127.0.0.1, uvloop. Requests are assumed to have no body
(the calibration sends GETs).
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

BODY = b'{"ok":true,"n":1}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class _Canned(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        n = buf.count(b"\r\n\r\n")
        if n:
            self.transport.write(RESPONSE * n)
            buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
        self.buf = buf


def main() -> int:
    import uvloop

    port = int(sys.argv[1])

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Canned, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
