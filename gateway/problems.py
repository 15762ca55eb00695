"""RFC 9457 problem+json: the one place where domain errors become HTTP statuses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from exchange.errors import (
    AuthenticationFailed,
    ConfigurationError,
    Conflict,
    ExchangeError,
    Forbidden,
    InvalidInput,
    LedgerIntegrityError,
    LedgerUnavailable,
    NotFound,
    PeerUnavailable,
    VerificationFailed,
)
from gateway.responses import JSONBody

log = logging.getLogger("certex.gateway")

PROBLEM_BASE = "urn:certex:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"

_STATUS: tuple[tuple[type[ExchangeError], int, str], ...] = (
    (AuthenticationFailed, 401, "Unauthenticated"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not found"),
    (Conflict, 409, "Conflict"),
    (InvalidInput, 400, "Invalid input"),
    (VerificationFailed, 400, "Verification failed"),
    (LedgerUnavailable, 503, "Ledger unavailable"),
    (PeerUnavailable, 502, "Peer node unavailable"),
    (LedgerIntegrityError, 503, "Ledger integrity failure"),
    (ConfigurationError, 503, "Node misconfigured"),
)


class ProblemResponse(JSONBody):
    media_type = PROBLEM_MEDIA_TYPE


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {"WWW-Authenticate": 'Bearer realm="certex"'} if status == 401 else None
    return ProblemResponse(body, status_code=status, headers=headers)


def status_for(exc: ExchangeError) -> tuple[int, str]:
    if isinstance(exc, PeerUnavailable) and exc.code == "peer-timeout":
        return 504, "Peer node timed out"
    for cls, status, title in _STATUS:
        if isinstance(exc, cls):
            return status, title
    return 400, "Request refused"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json (never an HTML 500)."""

    @app.exception_handler(ExchangeError)
    async def _domain(_: Request, exc: ExchangeError) -> ProblemResponse:
        status, title = status_for(exc)
        if status >= 500:
            log.error("%s: %s", exc.code, exc.detail)
        return problem(status, exc.code, title, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}"
        return problem(400, "invalid-request", "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> ProblemResponse:
        code = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}.get(
            exc.status_code, "http-error"
        )
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> ProblemResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal", "Internal error", "the node failed; nothing was changed")


def responses(*codes: int, **extra: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given problem statuses (plus ``extra``, keyed "200" etc.)."""
    out: dict[int | str, dict[str, Any]] = {c: PROBLEM_RESPONSES[c] for c in codes}
    out.update({int(k.removeprefix("s")): v for k, v in extra.items()})
    return out


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid input (problem+json)"},
    401: {"description": "Missing or invalid access token (problem+json)"},
    403: {"description": "Not allowed (problem+json)"},
    404: {"description": "Not found (problem+json)"},
    409: {"description": "Conflicts with the current state (problem+json)"},
    413: {"description": "Body too large (problem+json)"},
    502: {"description": "A peer node failed; nothing was released (problem+json)"},
    503: {"description": "The ledger could not commit; nothing was released (problem+json)"},
    504: {"description": "A peer node timed out; nothing was released (problem+json)"},
}
