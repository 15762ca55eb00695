"""Time passed in, so expiry, status and ledger timestamps are testable without sleeping."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


@dataclass
class FixedClock:
    """A clock that only moves when told to (tests)."""

    t: float = field(default=1_800_000_000.0)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
