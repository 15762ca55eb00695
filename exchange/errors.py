"""The exchange's error tree.

Domain errors carry a stable machine-readable ``code`` (it becomes the last segment of the
problem ``type`` URI at the HTTP edge) and a human ``detail``. They never carry an HTTP
status: ``gateway/problems.py`` maps each class to one.
"""

from __future__ import annotations

from typing import Any


class ExchangeError(Exception):
    """Base of every error the exchange raises on purpose."""

    code = "exchange-error"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra: dict[str, Any] = extra


class InvalidInput(ExchangeError):
    """The caller sent something malformed or outside what the contract allows."""

    code = "invalid-input"


class InvalidIdentifier(InvalidInput):
    """An identifier (resident ID, USCC, region, item code, certificate id) fails validation."""

    code = "invalid-identifier"


class VerificationFailed(ExchangeError):
    """A signature, token, credential or proof did not verify; ``code`` names the one reason."""

    code = "verification-failed"


class AuthenticationFailed(ExchangeError):
    """The caller could not be authenticated (missing, forged, expired or replayed credentials)."""

    code = "unauthenticated"


class Forbidden(ExchangeError):
    """The caller is authenticated but not allowed to do this."""

    code = "forbidden"


class ConsentDenied(Forbidden):
    """No consent covers this access."""

    code = "consent-denied"


class NotFound(ExchangeError):
    """The thing asked for does not exist (or is not visible to this caller)."""

    code = "not-found"


class Conflict(ExchangeError):
    """The request conflicts with the current state (duplicate, final state, replay)."""

    code = "conflict"


class LedgerIntegrityError(ExchangeError):
    """Stored ledger data no longer matches what was hashed or signed."""

    code = "ledger-integrity"


class LedgerUnavailable(ExchangeError):
    """The ledger could not durably commit an entry; nothing may be released."""

    code = "ledger-unavailable"


class PeerUnavailable(ExchangeError):
    """A federation peer could not be reached, timed out or failed; nothing was released."""

    code = "peer-unavailable"


class ConfigurationError(ExchangeError):
    """The node is misconfigured (missing key, bad setting)."""

    code = "configuration"
