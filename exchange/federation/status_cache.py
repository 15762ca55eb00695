"""Status-list tokens fetched from other nodes, re-used for their ``ttl``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.crypto.jws import unverified_claims
from exchange.errors import PeerUnavailable, VerificationFailed
from exchange.status.codec import read_status

MAX_TTL = 300


def _ttl_of(token: str) -> int:
    try:
        ttl = unverified_claims(token).get("ttl", 0)
    except VerificationFailed:  # unreadable: do not cache (read_status refuses it anyway)
        return 0
    return min(int(ttl), MAX_TTL) if isinstance(ttl, int) and ttl > 0 else 0


class StatusCache:
    """Verified status lookups with per-list caching (bounded by 5 minutes)."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def status(self, uri: str, idx: int, *, resolve_key: Callable[[Mapping[str, Any]],
               Ed25519PublicKey], now: float, http: httpx.Client | None = None) -> int:
        mono = time.monotonic()
        with self._lock:
            hit = self._tokens.get(uri)
        fresh = hit is not None and hit[1] > mono
        token = hit[0] if hit is not None and fresh else None
        if token is None:
            try:
                r = (http or httpx).get(uri, timeout=5.0)
                r.raise_for_status()
            except httpx.HTTPError as e:
                raise PeerUnavailable(f"status list {uri} is unreachable",
                                      code="peer-unreachable") from e
            token = r.text.strip()
        value = read_status(token, resolve_key, idx=idx, uri=uri, now=now)
        if not fresh:
            with self._lock:
                self._tokens[uri] = (token, mono + _ttl_of(token))
        return value

    def forget(self) -> None:
        with self._lock:
            self._tokens.clear()
