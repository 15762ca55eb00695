"""The private half of signing keys: encrypted PKCS#8 files in the node's ``keys/`` directory.

Private keys never leave this module unencrypted except as in-memory ``SigningKey`` objects;
they are never logged, returned over HTTP or written anywhere but ``keys/<kid>.pem``.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.crypto.jws import SigningKey
from exchange.errors import ConfigurationError

_KID = re.compile(r"^[A-Za-z0-9_-]{43}$")


class KeyStore:
    """Encrypted-at-rest Ed25519 keys, one PEM file per ``kid`` (RFC 7638 thumbprint)."""

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        if len(passphrase) < 16:
            raise ConfigurationError("CERTEX_KEY_PASSPHRASE must be at least 16 bytes")
        self._dir = directory
        self._passphrase = passphrase
        self._cache: dict[str, SigningKey] = {}
        self._lock = threading.Lock()

    def _path(self, kid: str) -> Path:
        if not _KID.fullmatch(kid):
            raise ConfigurationError(f"not a key id: {kid!r}")
        return self._dir / f"{kid}.pem"

    def generate(self) -> SigningKey:
        """Create a new key and write it encrypted (mode 0600) before anyone can use it."""
        key = SigningKey.generate()
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._path(key.kid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        with self._lock:
            self._cache[key.kid] = key
        return key

    def load(self, kid: str) -> SigningKey:
        """The signing key ``kid``; raises ConfigurationError if missing or undecryptable."""
        with self._lock:
            cached = self._cache.get(kid)
        if cached is not None:
            return cached
        path = self._path(kid)
        try:
            data = path.read_bytes()
        except FileNotFoundError as e:
            raise ConfigurationError(f"private key {kid} is missing from {self._dir}") from e
        try:
            private = serialization.load_pem_private_key(data, self._passphrase)
        except (ValueError, TypeError) as e:
            raise ConfigurationError(
                f"private key {kid} cannot be decrypted (wrong CERTEX_KEY_PASSPHRASE?)"
            ) from e
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigurationError(f"private key {kid} is not Ed25519")
        key = SigningKey(kid=kid, private_key=private)
        if key.public_jwk().get("kid") not in (None, kid):
            raise ConfigurationError(f"key file {kid}.pem holds another key")
        with self._lock:
            self._cache[kid] = key
        return key
