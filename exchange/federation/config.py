"""The federation file: which province nodes exist, where they are, and their public keys.

``{"nodes": {"44": {"base_url": "...", "jwks": {"keys": [...]}}, "50": {...}}}`` — each node's
keys exactly as its ``/.well-known/jwks.json`` serves them. A node refuses peers not listed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.crypto.jwk import public_key_from_jwk
from exchange.errors import ConfigurationError, Forbidden, VerificationFailed
from exchange.identifiers import PROVINCES


@dataclass(frozen=True, slots=True)
class Peer:
    """A listed province node."""

    province: str
    base_url: str
    keys: Mapping[str, Ed25519PublicKey]

    def key(self, kid: object) -> Ed25519PublicKey:
        """The peer's public key ``kid``; VerificationFailed if the federation file lacks it."""
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        raise VerificationFailed(f"node {self.province} has no key {kid!r} in the federation file",
                                 code="unknown-key")


@dataclass(frozen=True, slots=True)
class Federation:
    """This node's view of the network, and one keep-alive HTTP client for talking to it."""

    me: str
    nodes: Mapping[str, Peer]
    http: httpx.Client = field(
        default_factory=lambda: httpx.Client(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32)),
        compare=False, repr=False)

    def close(self) -> None:
        self.http.close()

    def peer(self, province: str) -> Peer:
        """A listed node other than this one; Forbidden for anything else."""
        peer = self.nodes.get(province)
        if peer is None or province == self.me:
            raise Forbidden(f"node {province!r} is not a listed peer", code="unknown-peer")
        return peer

    def peers(self) -> list[Peer]:
        return [p for code, p in sorted(self.nodes.items()) if code != self.me]


def parse_federation(data: Mapping[str, Any], me: str) -> Federation:
    """Validate a federation document; ConfigurationError naming what is wrong."""
    nodes = data.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise ConfigurationError("the federation file needs a non-empty 'nodes' object")
    parsed: dict[str, Peer] = {}
    for province, entry in nodes.items():
        if province not in PROVINCES:
            raise ConfigurationError(f"federation: {province!r} is not a GB/T 2260 province code")
        if not isinstance(entry, dict) or not isinstance(entry.get("base_url"), str):
            raise ConfigurationError(f"federation: node {province} needs a base_url")
        keys = (entry.get("jwks") or {}).get("keys")
        if not isinstance(keys, list) or not keys:
            raise ConfigurationError(f"federation: node {province} needs jwks.keys")
        by_kid: dict[str, Ed25519PublicKey] = {}
        for k in keys:
            if isinstance(k, dict) and isinstance(k.get("kid"), str):
                by_kid[k["kid"]] = public_key_from_jwk(k)
        parsed[province] = Peer(province, entry["base_url"].rstrip("/"), by_kid)
    if me not in parsed:
        raise ConfigurationError(f"federation: this node ({me}) is not listed in the file")
    return Federation(me, parsed)


def load_federation(path: Path, me: str) -> Federation:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"cannot read the federation file {path}: {e}") from e
    return parse_federation(data, me)
