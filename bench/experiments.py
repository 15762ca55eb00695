"""Candidate hot-path fixes, measured without editing the product.

``receipt-once``, ``status-hint``, ``key-cache`` and ``subject-batch`` below have landed in
the product and are now accepted as no-ops; their descriptions stay as the record of what
was measured.

Each patch is applied at runtime, only inside processes the bench starts: the server (this
module's app factory wraps ``gateway.app.create_app``). So the
bench can say what a change to ``exchange/`` would buy before anyone makes it; PROFILE.md
describes the real change each one stands for. Selected by ``CERTEX_BENCH_PATCHES``
(comma-separated):

``receipt-once``   a granted pull computes its tlog-proof receipt once. Today
                   ``exchange.pull.flow.run_pull`` calls ``ledger.service.receipt(index)`` and
                   ``pull.service.release`` calls it again for the same index (its result is
                   discarded): 3 queries and a pool checkout twice. Here the second call is
                   served from the first.
``status-hint``    status-index allocation no longer runs ``UPDATE status_lists SET allocated =
                   allocated + 1`` inside the issuing transaction, where the row lock is held
                   until that transaction commits and so serialises every issuance. The
                   counter is only a capacity hint (collisions are caught by the primary key);
                   here it is simply not maintained (a list then never closes, which a bench
                   run never notices). Bumping it on a second pooled connection from inside
                   the request, as a first version of this patch did, exhausts the pool
                   (40 threads each holding one connection and waiting for another) and
                   deadlocks the node: the real fix must not do that.
``key-cache``      ``KeyService.public_key`` memoises (kid, owner) → public key: a key record's
                   public half never changes, retired keys still verify.
``subject-batch``  the ledger writer fetches the last index of every distinct subject in the
                   batch with one grouped query instead of one ``SELECT max(idx)`` per subject.
``threads-N``      the app runs its sync routes on N threadpool threads instead of AnyIO's
                   default 40 (set in the lifespan), so fewer threads fight over one GIL.
``switch-N``       the process's GIL switch interval is N µs instead of 5,000
                   (``sys.setswitchinterval``): a thread whose I/O has completed (the ledger
                   writer after each round trip) waits at most that long for a thread that
                   holds the GIL (the event loop running requests) to let it go.
"""

from __future__ import annotations

import os
import sys
from typing import Any

PATCHES = ("threads-N", "switch-N")
# Measured here first, now in the product: accepted as no-ops. (``subject-batch``: the
# writer's back-pointer lookup, exchange/ledger/backpointers.py, is that grouped query.)
LANDED = ("receipt-once", "status-hint", "key-cache", "subject-batch")


def apply(names: str | None = None) -> list[str]:
    """Apply the patches named in ``names`` (default: ``CERTEX_BENCH_PATCHES``)."""
    wanted = [n.strip() for n in (names or os.environ.get("CERTEX_BENCH_PATCHES", "")).split(",")
              if n.strip()]
    for name in wanted:
        if name.startswith("threads-") and name[8:].isdigit():
            continue  # applied by create_app, inside the server's event loop
        if name.startswith("switch-") and name[7:].isdigit():
            sys.setswitchinterval(int(name[7:]) / 1e6)
            continue
        if name in LANDED:
            continue
        raise SystemExit(f"unknown patch {name!r}; known: {', '.join(PATCHES)}")
    return wanted


def create_app() -> Any:
    """``uvicorn bench.experiments:create_app --factory``: the node with the patches."""
    from contextlib import asynccontextmanager

    from gateway.app import create_app as node_app

    applied = apply()
    app = node_app()
    threads = next((int(n[8:]) for n in applied if n.startswith("threads-")), None)
    if threads is not None:
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(a: Any) -> Any:
            import anyio.to_thread

            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
            async with inner(a) as state:
                yield state

        app.router.lifespan_context = lifespan
    return app
