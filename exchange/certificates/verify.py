"""Verifying a certificate (SD-JWT VC): signature, format, validity window, disclosures, status.

Pure: the caller supplies how to find the issuer's key and the status, so the same steps run
online (``POST /v1/verify``, against the node's keys and status lists) and offline
(``certex verify``, against JWKS files).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.certificates.types import BY_VCT
from exchange.crypto.jws import check_claims
from exchange.crypto.sdjwt import open_sd_jwt
from exchange.errors import ExchangeError, VerificationFailed
from exchange.identifiers import parse_certificate_id

IssuerKeyResolver = Callable[[str, Mapping[str, Any]], Ed25519PublicKey]
"""(unverified iss, unverified header) → the issuer's public key, or raise VerificationFailed."""
StatusResolver = Callable[[str, int], int | None]
"""(status list uri, index) → 0/1/2, or None when the status cannot be checked (offline)."""

STATUS_FAILURES = {
    1: ("revoked", "the certificate has been revoked"),
    2: ("suspended", "the certificate is suspended"),
}


@dataclass(frozen=True, slots=True)
class VerifiedCredential:
    """A credential whose signature, format, window, disclosures and status all hold."""

    issuer: str
    kid: str
    vct: str
    type: str
    certificate_id: str
    valid_from: int | None
    valid_until: int | None
    status: str  # "valid", or "unchecked" when no status source was available
    disclosed: Mapping[str, Any]


def verify_credential(
    credential: str,
    *,
    resolve_key: IssuerKeyResolver,
    status_of: StatusResolver,
    now: float,
) -> VerifiedCredential:
    """Verify ``credential`` or raise VerificationFailed naming the single reason."""
    checked = check_credential(credential, resolve_key=resolve_key, now=now)
    return conclude(checked, status_of(checked.status_uri, checked.status_idx))


@dataclass(frozen=True, slots=True)
class CheckedCredential:
    """A credential whose every check but its status has passed (see :func:`conclude`)."""

    issuer: str
    kid: str
    vct: str
    type: str
    certificate_id: str
    valid_from: int | None
    valid_until: int | None
    disclosed: Mapping[str, Any]
    status_uri: str
    status_idx: int


WINDOW_LEEWAY: Final = 30.0
"""Seconds of clock skew allowed at the validity window's edges (exp, nbf, iat)."""


@dataclass(frozen=True, slots=True)
class _Checked:
    """What :class:`CheckMemo` keeps of a credential that passed every check but the window."""

    checked: CheckedCredential
    iss: str
    header: Mapping[str, Any]
    key: bytes  # the raw issuer key its signature verified with
    window: Mapping[str, Any]  # exp, nbf, iat as signed


class CheckMemo:
    """Credentials that passed :func:`check_credential` lately, so that one presented again
    costs a lookup instead of a signature verification, a Disclosure digest each and an
    identifier check ("token verification done once per token").

    Only what follows from the credential's exact text and the issuer key is kept. Each
    use still resolves the issuer key and compares it byte for byte with the key the
    signature verified with (an issuer or key no longer known fails as before; another
    key means a full check), and checks the validity window at that use's ``now``. A
    credential that fails is never kept; status is never kept (it is the caller's). The
    oldest entries go first once ``max_entries`` credentials or ``max_chars`` characters
    are held."""

    def __init__(self, max_entries: int = 4096, max_chars: int = 8_000_000) -> None:
        self._held: dict[str, _Checked] = {}
        self._chars = 0
        self._max_entries = max_entries
        self._max_chars = max_chars
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def get(self, credential: str) -> _Checked | None:
        return self._held.get(credential)

    def put(self, credential: str, entry: _Checked) -> None:
        if self._max_entries <= 0 or len(credential) > self._max_chars:
            return
        with self._lock:
            if credential in self._held:
                return
            self._held[credential] = entry
            self._chars += len(credential)
            while len(self._held) > self._max_entries or self._chars > self._max_chars:
                oldest = next(iter(self._held))
                del self._held[oldest]
                self._chars -= len(oldest)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._chars = 0


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def check_credential(
    credential: str,
    *,
    resolve_key: IssuerKeyResolver,
    now: float,
    memo: CheckMemo | None = None,
) -> CheckedCredential:
    """Steps 1-3 and the shape of the status claim; raise VerificationFailed naming the
    single reason. The status itself is looked up by the caller (perhaps for many
    credentials at once) and judged by :func:`conclude`. With a ``memo``, a credential
    that passed before skips what cannot have changed (see :class:`CheckMemo`)."""
    if not isinstance(credential, str) or len(credential) > 200_000:
        raise VerificationFailed("credential must be an SD-JWT string", code="malformed")
    if memo is not None:
        kept = memo.get(credential)
        if kept is not None and _raw(resolve_key(kept.iss, kept.header)) == kept.key:
            check_claims(kept.window, now=now, leeway=WINDOW_LEEWAY)
            return kept.checked
    used: list[Ed25519PublicKey] = []

    def resolve(header: Mapping[str, Any], payload: Mapping[str, Any]) -> Ed25519PublicKey:
        key = resolve_key(str(payload.get("iss", "")), header)
        used.append(key)
        return key

    # 1. SD-JWT: typ, alg allowlist, issuer key, signature, disclosures, validity window.
    verified = open_sd_jwt(credential, resolve)
    claims = verified.claims
    check_claims(claims, now=now, leeway=WINDOW_LEEWAY)
    # 2. A type this exchange knows; disclosures are claims of that type.
    vct = claims.get("vct")
    ctype = BY_VCT.get(vct) if isinstance(vct, str) else None
    if ctype is None or not isinstance(vct, str):
        raise VerificationFailed(f"unknown vct {vct!r}", code="unknown-vct")
    allowed = {c.name for c in ctype.claims} | {"sub"}
    extra = sorted(set(verified.disclosed) - allowed)
    if extra:
        raise VerificationFailed(
            f"claims not defined for {ctype.key}: {extra}", code="unknown-claim"
        )
    # 3. The certificate identifier is well formed.
    cert_id = claims.get("certificate_id")
    try:
        parse_certificate_id(cert_id if isinstance(cert_id, str) else "")
    except ExchangeError as e:
        raise VerificationFailed(
            "certificate_id is missing or invalid", code="bad-certificate-id"
        ) from e
    # 4. Status (Token Status List): the reference must be well formed.
    ref = claims.get("status", {})
    sl = ref.get("status_list") if isinstance(ref, dict) else None
    if not (
        isinstance(sl, dict)
        and isinstance(sl.get("uri"), str)
        and isinstance(sl.get("idx"), int)
        and not isinstance(sl.get("idx"), bool)
    ):
        raise VerificationFailed("status claim is missing or malformed", code="bad-status-claim")
    checked = CheckedCredential(
        issuer=str(claims.get("iss")),
        kid=str(verified.header.get("kid")),
        vct=vct,
        type=ctype.key,
        certificate_id=str(cert_id),
        valid_from=_int(claims.get("nbf")),
        valid_until=_int(claims.get("exp")),
        disclosed=dict(verified.disclosed),
        status_uri=sl["uri"],
        status_idx=sl["idx"],
    )
    if memo is not None and used:
        window = {k: claims[k] for k in ("exp", "nbf", "iat") if k in claims}
        memo.put(
            credential,
            _Checked(checked, str(claims.get("iss", "")), verified.header, _raw(used[-1]), window),
        )
    return checked


def conclude(checked: CheckedCredential, value: int | None) -> VerifiedCredential:
    """The verdict once the status is known (``None``: no status source was available)."""
    if value in STATUS_FAILURES:
        code, detail = STATUS_FAILURES[value]
        raise VerificationFailed(detail, code=code)
    if value not in (None, 0):
        raise VerificationFailed(f"unknown status value {value}", code="bad-status")
    return VerifiedCredential(
        issuer=checked.issuer,
        kid=checked.kid,
        vct=checked.vct,
        type=checked.type,
        certificate_id=checked.certificate_id,
        valid_from=checked.valid_from,
        valid_until=checked.valid_until,
        status="valid" if value == 0 else "unchecked",
        disclosed=checked.disclosed,
    )


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None
