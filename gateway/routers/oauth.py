"""``POST /oauth2/token``: client credentials with ``private_key_jwt`` (RFC 7523, RFC 6749 §4.4)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form

from exchange.clients.service import OAuthError, exchange_assertion
from gateway.deps import NodeDep, UowDep
from gateway.responses import JSONBody

router = APIRouter(tags=["oauth"])

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(error: str, description: str) -> JSONBody:
    status = 401 if error == "invalid_client" else 400
    return JSONBody(
        {"error": error, "error_description": description}, status_code=status, headers=_NO_STORE
    )


@router.post(
    "/oauth2/token",
    summary="Exchange a client assertion for a node access token",
    responses={
        400: {"description": "RFC 6749 §5.2 error (invalid_request, invalid_scope, ...)"},
        401: {"description": "RFC 6749 §5.2 invalid_client"},
    },
)
def token(
    node: NodeDep,
    uow: UowDep,
    grant_type: Annotated[str, Form()] = "",
    client_assertion_type: Annotated[str, Form()] = "",
    client_assertion: Annotated[str, Form(max_length=8192)] = "",
    scope: Annotated[str | None, Form(max_length=1000)] = None,
) -> Any:
    """`grant_type=client_credentials` with a `private_key_jwt` client assertion.

    The assertion: `iss` = `sub` = client id, `aud` = `{base_url}/oauth2/token`, `exp` at most
    5 minutes ahead, a `jti` never used before, signed with the client's registered Ed25519 key.
    """
    if grant_type != "client_credentials":
        return _oauth_error("unsupported_grant_type", "grant_type must be client_credentials")
    if client_assertion_type != ASSERTION_TYPE or not client_assertion:
        return _oauth_error("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}")
    try:
        with uow() as session:
            issued = exchange_assertion(session, node, assertion=client_assertion, scope=scope)
    except OAuthError as e:
        return _oauth_error(e.error, e.description)
    return JSONBody(
        {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        },
        headers=_NO_STORE,
    )
