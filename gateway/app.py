"""The FastAPI application factory. Nothing is created at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from exchange.clients.service import TokenVerifier
from exchange.node import Node
from exchange.settings import Settings
from gateway import problems
from gateway.limits import BodySizeLimit
from gateway.routers import (
    certificates,
    consents,
    federation,
    items,
    ledger,
    me,
    meta,
    oauth,
    pull,
    status,
    verify,
)

DESCRIPTION = """\
A province node of the cross-agency electronic certificate exchange (一网通办).

* Agencies authenticate with `private_key_jwt` (RFC 7523) at `POST /oauth2/token` and issue
  certificates as SD-JWT VCs (RFC 9901, draft-ietf-oauth-sd-jwt-vc) signed with Ed25519.
* Status is published as IETF Token Status Lists (2 bits: 0 valid, 1 revoked, 2 suspended).
* Subjects grant consents per item and claim; banks pull by item code under a consent and get
  only the permitted disclosures plus a C2SP `tlog-proof@v1` receipt. Every access, granted or
  denied, is in an RFC 6962 Merkle, hash-chained ledger with signed C2SP checkpoints.
* Across provinces the bank's node forwards a signed request to the holding node; the bank
  gets both nodes' receipts.
* Every error is an RFC 9457 `application/problem+json` document with a stable `type` URI
  (`urn:certex:problem:<code>`), except `POST /oauth2/token`, which answers RFC 6749 §5.2.
"""


def freeze_startup_objects() -> None:
    """Move everything made so far — modules, the node, the app's routes and schemas, all
    living as long as the process — out of the cyclic garbage collector's way. Its full
    collections otherwise rescan them every few seconds under load (30-50 ms each on the
    bench machine, the whole p99 of ledger appends); after this they scan only what requests
    create. Objects frozen are still freed by reference counting."""
    gc.collect()
    gc.freeze()


def create_app(node: Node | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the app around ``node`` (or one opened from ``settings``/the environment)."""
    own_node = node is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking route work runs on this many threads (anyio's default is 40): fewer
        # threads contend less for the GIL and fit the connection pool, so none waits for a
        # connection or churns overflow connections.
        to_thread.current_default_thread_limiter().total_tokens = the_node.settings.threads
        the_node.start_ledger()
        if own_node:  # this process serves the node (not a test handing in its own)
            freeze_startup_objects()
        yield
        if own_node:
            the_node.close()

    if node is None:
        settings = settings or Settings()
        # The request threads, the ledger writer and its waiters' lookups, and a spare.
        node = Node.open(settings, pool_size=settings.threads + 4)
    the_node = node
    app = FastAPI(
        title="certex node",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.node = the_node
    app.state.token_verifier = TokenVerifier(the_node)
    problems.install(app)
    # The routers' routes go straight into the app's route list, the busiest first, and the
    # documentation routes last. Starlette tries routes in order (~0.7 µs each here), and
    # FastAPI's include_router keeps each router as a nested node that walks every route to
    # check a version on every request: a trivial route served 0.59x as fast as in a bare
    # app that way, 0.94x this way (bench/PROFILE.md). No router has dependencies of its
    # own and no two routers' paths overlap (tests/test_app_routes.py), so each request
    # reaches the same route either way; the OpenAPI document is the same.
    docs = list(app.router.routes)
    app.router.routes.clear()
    for module in (
        verify, pull, ledger, status, certificates, consents, oauth, meta, items, me, federation
    ):
        app.router.routes.extend(module.router.routes)
    app.router.routes.extend(docs)
    app.add_middleware(BodySizeLimit, max_bytes=the_node.settings.max_body_bytes)
    return app
