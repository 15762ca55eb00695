"""The whole pull, local or across nodes, as one orchestration.

A pull needs more than one transaction: the decision and its ledger event commit together,
the certificates are released only after that entry is durable, and a forwarded pull logs a
second entry if the holding node fails or refuses. So this module, like the ledger writer,
commits on its own (``node.sessions.begin()`` + ``commit_wait``); nothing else does.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from anyio import to_thread

from exchange.clients.model import SCOPE_PULL, Principal
from exchange.clients.service import require_scope
from exchange.errors import ConsentDenied, LedgerUnavailable, NotFound, PeerUnavailable
from exchange.federation import service as fed
from exchange.federation.messages import PeerRefused, PeerRequest
from exchange.ledger.service import commit_wait, receipt, take_refs, wait_refs
from exchange.node import Node
from exchange.pull.service import (
    Decision,
    PullRequest,
    Requester,
    decide_for,
    presentations,
    release,
)


@dataclass(frozen=True, slots=True)
class PullOutcome:
    credentials: list[dict[str, str]]
    receipt: str
    ledger_index: int
    receipts: dict[str, str] = field(default_factory=dict)


def _decide_commit(node: Node, prepared: fed.Prepared) -> tuple[Decision, list[str]]:
    """The decision's transaction: committed with its ledger event; the event's refs."""
    with node.sessions.begin() as session:
        decision = decide_for(session, node, prepared.requester, prepared.req,
                              remote=prepared.remote, refused=prepared.refused,
                              forwarding=prepared.forwarding)
    return decision, list(take_refs(session))


def _decide(node: Node, prepared: fed.Prepared) -> tuple[Decision, int]:
    decision, refs = _decide_commit(node, prepared)
    return decision, wait_refs(node, refs)[-1]


def _refuse(decision: Decision, index: int, **extra: object) -> NotFound | ConsentDenied:
    cls = NotFound if decision.not_found else ConsentDenied
    return cls(decision.detail, code=decision.reason, ledger_index=index, **extra)


def _log_second(node: Node, prepared: fed.Prepared, outcome: str, reason: str) -> int:
    with node.sessions.begin() as session:
        fed.log_outcome(session, node, prepared, outcome, reason)
    return commit_wait(node, session)[-1]


def run_pull(node: Node, principal: Principal, req: PullRequest, *, holder: str | None = None,
             request_id: str | None = None) -> PullOutcome:
    """Decide, log, release (or forward). Raises ConsentDenied/NotFound (with ledger_index),
    PeerUnavailable, LedgerUnavailable."""
    me = node.settings.node
    if node.federation is None:  # a single node: every consent and certificate is here
        require_scope(principal, SCOPE_PULL)
        prepared = fed.Prepared(Requester(principal.client_id, principal.client_id), req)
    else:
        try:
            prepared = fed.prepare_pull(node, principal, req, holder)
        except PeerUnavailable as e:  # the home node is unreachable: a failed, logged attempt
            grantee = f"{me}:{principal.client_id}"
            failed = _log_second(node, fed.Prepared(Requester(grantee, principal.client_id), req),
                                 "failed", e.code)
            raise PeerUnavailable(e.detail, code=e.code, ledger_index=failed) from e
    decision, index = _decide(node, prepared)
    if not decision.granted:
        raise _refuse(decision, index)
    if not prepared.forwarding:
        result = release(node, decision, index)
        return PullOutcome(result.credentials, result.receipt, index, {me: result.receipt})
    own = receipt(node, index)
    try:
        answer = fed.forward(node, prepared, request_id or secrets.token_urlsafe(16), own, index)
    except PeerUnavailable as e:
        failed = _log_second(node, prepared, "failed", e.code)
        raise PeerUnavailable(e.detail, code=e.code, ledger_index=failed,
                              request_ledger_index=index) from e
    except PeerRefused as e:
        denied = _log_second(node, prepared, "denied", e.code)
        cls = NotFound if e.status == 404 else ConsentDenied
        raise cls(e.detail, code=e.code, ledger_index=denied,
                  peer_ledger_index=e.problem.get("ledger_index")) from e
    return PullOutcome(list(answer["credentials"]), own, index,
                       {me: own, prepared.holder: str(answer["receipt"])})


async def run_pull_async(node: Node, principal: Principal, req: PullRequest, *,
                         holder: str | None = None, request_id: str | None = None,
                         receipt_of: Callable[[int], Awaitable[str]] | None = None,
                         ) -> PullOutcome:
    """:func:`run_pull` for the event loop. On a single node the decision's transaction runs
    on a worker thread, the wait for its ledger entry holds no thread, and the presentations
    are made on the loop; ``receipt_of`` (e.g. a read batched across requests) gives the
    receipt, else it is read inline. Across provinces the whole
    orchestration runs on a worker thread (it makes blocking peer calls)."""
    if node.federation is not None:
        return await to_thread.run_sync(
            lambda: run_pull(node, principal, req, holder=holder, request_id=request_id))
    require_scope(principal, SCOPE_PULL)
    prepared = fed.Prepared(Requester(principal.client_id, principal.client_id), req)
    decision, refs = await to_thread.run_sync(_decide_commit, node, prepared)
    if node.ledger is None:
        raise LedgerUnavailable("this process has no ledger writer running")
    index = (await node.ledger.wait_async(refs))[-1]
    if not decision.granted:
        raise _refuse(decision, index)
    credentials = presentations(decision)
    own = await receipt_of(index) if receipt_of is not None else receipt(node, index)
    return PullOutcome(credentials, own, index, {node.settings.node: own})


def serve_peer_pull(node: Node, peer: PeerRequest,
                    previous: dict[str, object] | None) -> fed.HolderCall:
    """H: the checks that need the network, before H's own transaction (no session held)."""
    return fed.prepare_holder(node, peer, previous)


def holder_pull(node: Node, call: fed.HolderCall) -> dict[str, object]:
    """H: decide (or replay), log, release; the answer for the requesting node."""
    if call.previous is not None:
        decision, index = fed.replay(node, call.previous)
    else:
        decision, index = _decide(node, call.prepared)
        fed.remember(node, call, decision, index)
    if not decision.granted:
        raise _refuse(decision, index)
    result = release(node, decision, index)
    return {"credentials": result.credentials, "receipt": result.receipt,
            "ledger_index": index, "province": node.settings.node}
