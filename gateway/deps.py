"""Request dependencies: the node, one unit of work per request, the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

from anyio import to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from exchange.clients.model import Principal
from exchange.clients.service import TokenVerifier
from exchange.errors import AuthenticationFailed, LedgerUnavailable
from exchange.ledger.service import commit_wait, take_refs
from exchange.node import Node
from exchange.subjects.service import Subject, verify_subject_token

T = TypeVar("T")


# Dependencies are ``async def`` although they do not await: FastAPI runs a plain ``def``
# dependency on a worker thread, a hop that costs more than the work. What they do is short
# (a cached token, at worst one key lookup by primary key) and runs on the event loop.


async def get_node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


NodeDep = Annotated[Node, Depends(get_node)]


class UnitOfWork:
    """``with uow() as session:`` — commits once at the end of the block, or rolls back.

    Ledger events recorded in the block were committed with it (outbox); leaving the block
    also waits until the ledger writer has appended them, so nothing is answered before its
    ledger entry is durable. Their indices are in ``ledger_indices`` afterwards.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self.ledger_indices: list[int] = []

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        with self._node.sessions.begin() as session:
            yield session
        self.ledger_indices = commit_wait(self._node, session)

    async def run(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in one transaction on a worker thread; then, holding no thread,
        wait until the writer has appended its ledger events. ``work``'s result."""

        def transaction() -> tuple[T, list[str]]:
            with self._node.sessions.begin() as session:
                result = work(session)
            return result, take_refs(session)

        result, refs = await to_thread.run_sync(transaction)
        if refs:
            if self._node.ledger is None:
                raise LedgerUnavailable("this process has no ledger writer running")
            self.ledger_indices = await self._node.ledger.wait_async(refs)
        return result


async def get_uow(node: NodeDep) -> UnitOfWork:
    return UnitOfWork(node)


UowDep = Annotated[UnitOfWork, Depends(get_uow)]

_bearer = HTTPBearer(auto_error=False, description="node access token from POST /oauth2/token")


async def get_principal(
    request: Request,
    node: NodeDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise AuthenticationFailed("a bearer access token is required", code="missing-token")
    verifier: TokenVerifier = request.app.state.token_verifier
    with node.reads() as session:
        return verifier.verify(session, creds.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_subject(
    node: NodeDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Subject:
    if creds is None or creds.scheme.lower() != "bearer":
        raise AuthenticationFailed("a subject's bearer token is required", code="missing-token")
    with node.reads() as session:
        return verify_subject_token(session, node, creds.credentials)


SubjectDep = Annotated[Subject, Depends(get_subject)]
