"""The node: settings, clock, database and keys wired together once per process.

Built by ``Node.open`` in the app factory or a CLI verb, never at import time.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from exchange.certificates.verify import CheckMemo
from exchange.clock import Clock, SystemClock
from exchange.crypto.keystore import KeyStore
from exchange.errors import ConfigurationError
from exchange.keys.service import KeyService
from exchange.persistence.db import make_engine, make_session_factory
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.federation.config import Federation
    from exchange.ledger.writer import LedgerWriter

log = logging.getLogger("certex")


@dataclass
class Node:
    """Everything a request handler or CLI verb needs from the running node."""

    settings: Settings
    clock: Clock
    engine: Engine
    sessions: sessionmaker[Session]
    reads: sessionmaker[Session]
    keys: KeyService
    subject_key: bytes
    rng: secrets.SystemRandom = field(default_factory=secrets.SystemRandom)
    ledger: LedgerWriter | None = None
    federation: Federation | None = None
    check_memo: CheckMemo = field(default_factory=CheckMemo)

    @classmethod
    def open(cls, settings: Settings, clock: Clock | None = None, *, pool_size: int = 20) -> Node:
        clock = clock or SystemClock()
        engine = make_engine(settings.effective_database_url, pool_size=pool_size)
        keystore = KeyStore(settings.keys_dir, resolve_passphrase(settings))
        federation = None
        if settings.federation is not None:
            from exchange.federation.config import load_federation

            federation = load_federation(settings.federation, settings.node)
        return cls(
            settings=settings,
            clock=clock,
            engine=engine,
            sessions=make_session_factory(engine),
            reads=make_session_factory(engine, read_only=True),
            keys=KeyService(keystore, clock),
            subject_key=resolve_subject_key(settings),
            federation=federation,
            check_memo=CheckMemo(max_entries=settings.verify_memo),
        )

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def host(self) -> str:
        """The node's host name (``host[:port]``), used in the ledger origin."""
        return urlsplit(self.settings.base_url).netloc

    def start_ledger(self) -> LedgerWriter:
        """Start this process's ledger writer (the app factory does; CLI verbs that log do)."""
        from exchange.ledger.writer import LedgerWriter

        if self.ledger is None:
            self.ledger = LedgerWriter(self)
            self.ledger.start()
        return self.ledger

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.stop()
            self.ledger = None
        if self.federation is not None:
            self.federation.close()
        self.engine.dispose()


def _dev_secret(path: Path, make: bytes, what: str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(make)
    log.warning("dev mode: generated %s in %s; never use this outside development", what, path)
    return make


def resolve_passphrase(settings: Settings) -> bytes:
    """CERTEX_KEY_PASSPHRASE, or in dev mode a generated one kept beside the keys."""
    if settings.key_passphrase:
        return settings.key_passphrase.encode()
    if settings.dev:
        made = base64.urlsafe_b64encode(secrets.token_bytes(24))
        return _dev_secret(settings.keys_dir / ".dev-passphrase", made, "a key passphrase")
    raise ConfigurationError("CERTEX_KEY_PASSPHRASE is required outside dev mode")


def resolve_subject_key(settings: Settings) -> bytes:
    """The federation subject-pseudonym key (CERTEX_SUBJECT_KEY, base64, ≥ 32 bytes)."""
    raw: bytes
    if settings.subject_key:
        try:
            raw = base64.b64decode(settings.subject_key, validate=True)
        except ValueError as e:
            raise ConfigurationError("CERTEX_SUBJECT_KEY is not valid base64") from e
    elif settings.dev:
        made = base64.b64encode(secrets.token_bytes(32))
        raw = base64.b64decode(
            _dev_secret(settings.keys_dir / ".dev-subject-key", made, "a subject key")
        )
    else:
        raise ConfigurationError("CERTEX_SUBJECT_KEY is required outside dev mode")
    if len(raw) < 32:
        raise ConfigurationError("CERTEX_SUBJECT_KEY must hold at least 32 bytes")
    return raw
