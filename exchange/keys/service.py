"""Signing keys per owner (``node:token``, ``node:status``, ``node:consent``, ``node:ledger``,
``agency:<USCC>``): the newest unretired key signs; retired keys stay published so that
everything signed before a rotation still verifies."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from exchange.clock import Clock
from exchange.crypto.jwk import public_key_from_jwk
from exchange.crypto.jws import SigningKey
from exchange.crypto.keystore import KeyStore
from exchange.errors import ConfigurationError, VerificationFailed
from exchange.persistence.models import KeyRecord

NODE_ROLES = ("node:token", "node:status", "node:consent", "node:ledger")
DEV_ROLES = ("node:dev-idp",)


def agency_owner(uscc: str) -> str:
    return f"agency:{uscc}"


class KeyService:
    """Looks keys up in the database and their private halves in the key store."""

    CURRENT_TTL = 2.0  # seconds a process keeps using the key it looked up as current

    def __init__(self, keystore: KeyStore, clock: Clock) -> None:
        self._store = keystore
        self._clock = clock
        # A key's public half never changes (retired keys still verify): cache it for good.
        self._public: dict[tuple[str, str], Ed25519PublicKey] = {}
        # Which key is current does change (rotation, maybe in another process): briefly.
        self._current: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def create(self, session: Session, owner: str) -> SigningKey:
        """Generate a key for ``owner``; it signs from the moment the transaction commits."""
        key = self._store.generate()
        jwk = dict(key.public_jwk())
        jwk.update({"kid": key.kid, "use": "sig", "alg": "EdDSA"})
        session.add(
            KeyRecord(
                kid=key.kid,
                owner=owner,
                public_jwk=jwk,
                created_at=datetime.fromtimestamp(self._clock.now(), UTC),
            )
        )
        session.flush()
        with self._lock:
            self._current.pop(owner, None)
        return key

    def rotate(self, session: Session, owner: str) -> SigningKey:
        """Retire ``owner``'s current keys (still published) and create the one that signs next."""
        now = datetime.fromtimestamp(self._clock.now(), UTC)
        for rec in session.scalars(
            select(KeyRecord).where(KeyRecord.owner == owner, KeyRecord.retired_at.is_(None))
        ):
            rec.retired_at = now
        session.flush()
        return self.create(session, owner)

    def current(self, session: Session, owner: str) -> SigningKey:
        """The key ``owner`` signs with now (a rotation elsewhere shows within CURRENT_TTL)."""
        now = time.monotonic()
        with self._lock:
            hit = self._current.get(owner)
        if hit is not None and hit[1] > now:
            return self._store.load(hit[0])
        kid = session.scalar(
            select(KeyRecord.kid)
            .where(KeyRecord.owner == owner, KeyRecord.retired_at.is_(None))
            .order_by(KeyRecord.created_at.desc(), KeyRecord.kid)
            .limit(1)
        )
        if kid is None:
            raise ConfigurationError(f"no signing key for {owner}; run `certex init`")
        key = self._store.load(kid)
        with self._lock:
            self._current[owner] = (kid, now + self.CURRENT_TTL)
        return key

    def published(self, session: Session, owner_prefix: str) -> list[dict[str, Any]]:
        """Public JWKs (current and retired) of every owner starting with ``owner_prefix``."""
        rows = session.scalars(
            select(KeyRecord)
            .where(KeyRecord.owner.startswith(owner_prefix, autoescape=True))
            .order_by(KeyRecord.created_at, KeyRecord.kid)
        )
        return [dict(r.public_jwk) for r in rows]

    def cached_public_key(self, kid: object, owner: str) -> Ed25519PublicKey | None:
        """The public key ``kid`` of ``owner`` if this process has looked it up before."""
        if not isinstance(kid, str):
            return None
        with self._lock:
            return self._public.get((kid, owner))

    def public_key(self, session: Session, kid: object, owner: str) -> Ed25519PublicKey:
        """The public key ``kid`` of ``owner`` (current or retired); VerificationFailed if none."""
        if not isinstance(kid, str):
            raise VerificationFailed("the header has no kid", code="unknown-key")
        with self._lock:
            cached = self._public.get((kid, owner))
        if cached is not None:
            return cached
        rec = session.get(KeyRecord, kid)
        if rec is None or rec.owner != owner:
            raise VerificationFailed(f"no key {kid!r} belongs to {owner}", code="unknown-key")
        key = public_key_from_jwk(rec.public_jwk)
        with self._lock:
            self._public[(kid, owner)] = key
        return key
