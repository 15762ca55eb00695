"""The direct path's callers: what each hands the writer thread, how an asyncio caller's
wait times out, and how the writer answers them once a batch has (or has not) committed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future

from exchange.errors import LedgerUnavailable
from exchange.ledger.leaf import Event
from exchange.ledger.leaves import Ref


class Direct:
    """Events handed to ``append``/``append_async``: one caller, answered all at once."""

    __slots__ = ("events", "future", "loop", "refs", "waiter")

    def __init__(
        self,
        events: list[Event],
        future: Future[list[int]] | None = None,
        waiter: asyncio.Future[list[int]] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.events = events
        self.future = future  # a blocking caller's
        self.waiter = waiter  # an asyncio caller's, resolved on ``loop``
        self.loop = loop
        self.refs: Sequence[int] = ()  # given by the writer when it takes them

    def take(self) -> bool:
        """Claim the caller for a batch; False if it gave up first (its events are dropped)."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        # Read from the writer thread: a caller that times out just after this check gets
        # LedgerUnavailable although its events are appended ("may still be appended").
        return self.waiter is not None and not self.waiter.done()


def _expire(waiter: asyncio.Future[list[int]]) -> None:
    if not waiter.done():
        waiter.set_exception(LedgerUnavailable("the ledger did not commit in time"))


class Deadlines:
    """The asyncio callers of one event loop waiting on the writer, oldest first, with their
    deadlines: one timer a loop that expires those past theirs (at most ``every`` late),
    instead of a timer armed and cancelled for every call."""

    __slots__ = ("every", "forget", "loop", "pending", "scheduled", "timeout")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        forget: Callable[[asyncio.AbstractEventLoop], object],
    ) -> None:
        self.loop = loop
        self.timeout = timeout
        self.every = min(0.25, timeout / 4)
        self.forget = forget  # drops this loop's entry once nobody on it waits
        self.pending: collections.deque[tuple[float, asyncio.Future[list[int]]]] = (
            collections.deque()
        )
        self.scheduled = False

    def add(self, waiter: asyncio.Future[list[int]]) -> None:
        """On the loop: ``waiter`` expires ``timeout`` from now unless answered first."""
        self.pending.append((time.monotonic() + self.timeout, waiter))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_later(self.every, self.sweep)

    def sweep(self) -> None:
        # Every caller of a writer has the same timeout, so deadlines are in order.
        now, pending = time.monotonic(), self.pending
        while pending:
            deadline, waiter = pending[0]
            if not waiter.done():
                if deadline > now:
                    break
                _expire(waiter)
            pending.popleft()
        if pending:
            self.loop.call_later(self.every, self.sweep)
        else:
            self.scheduled = False
            self.forget(self.loop)


def _settle(results: list[tuple[asyncio.Future[list[int]], list[int] | None, str]]) -> None:
    """On an asyncio caller's loop: hand every result of one batch to its waiter."""
    for waiter, indices, error in results:
        if waiter.done():  # timed out or cancelled meanwhile
            continue
        if indices is not None:
            waiter.set_result(indices)
        else:
            waiter.set_exception(LedgerUnavailable(error))


def answer(direct: list[Direct], committed: Mapping[Ref, int], error: str) -> None:
    """From the writer thread: each caller gets its indices if all its events committed,
    else LedgerUnavailable(``error``); asyncio callers once per loop, on that loop."""
    by_loop: dict[
        asyncio.AbstractEventLoop,
        list[tuple[asyncio.Future[list[int]], list[int] | None, str]],
    ] = {}
    for d in direct:
        indices: list[int] | None
        try:
            indices = [committed[ref] for ref in d.refs]
        except KeyError:
            indices = None
        if d.future is not None:
            if indices is not None:
                d.future.set_result(indices)
            else:
                d.future.set_exception(LedgerUnavailable(error))
        elif d.waiter is not None and d.loop is not None:
            by_loop.setdefault(d.loop, []).append((d.waiter, indices, error))
    for loop, results in by_loop.items():
        # A closed loop (RuntimeError) has nobody waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, results)
