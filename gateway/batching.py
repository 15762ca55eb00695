"""Concurrent asks answered by one blocking read: the batch pattern of the read routes.

An ask that arrives while a batch is being read joins the next batch, never the running one,
so its answer reflects everything committed before it arrived. One batch at a time runs
``fetch`` on a worker thread: the event loop keeps parsing requests and writing responses
while the database answers. Errors are per ask (``fetch`` returns an exception in that
ask's place), and a failure of the whole read is every ask's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Batcher(Generic[K, V]):
    """``await batcher.ask(key)``: the value ``fetch`` read for ``key`` in its batch."""

    def __init__(self, fetch: Callable[[list[K]], Sequence[V | Exception]]) -> None:
        self._fetch = fetch
        self._asks: list[tuple[K, asyncio.Future[V]]] = []
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def ask(self, key: K) -> asyncio.Future[V]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (the app served again): start afresh
            self._loop, self._asks, self._busy = loop, [], False
        fut: asyncio.Future[V] = loop.create_future()
        self._asks.append((key, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start, loop)  # after the requests already runnable
        return fut

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        asks, self._asks = self._asks, []
        pending = loop.run_in_executor(None, self._fetch, [k for k, _ in asks])
        pending.add_done_callback(lambda done: self._done(loop, asks, done))

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        asks: list[tuple[K, asyncio.Future[V]]],
        done: asyncio.Future[Sequence[V | Exception]],
    ) -> None:
        if self._asks:
            self._start(loop)
        else:
            self._busy = False
        error = done.exception()
        for n, (_, fut) in enumerate(asks):
            if fut.done():  # the client went away
                continue
            if error is not None:
                fut.set_exception(error)
                continue
            result = done.result()[n]
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)
