"""A federation of real node processes on loopback, for ``certex dev federation`` and tests.

Each province node is its own ``certex serve`` process with its own database (SQLite files
by default) and key store; the federation file is generated from each node's JWKS.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from exchange.bootstrap import ensure_node_keys, migrate
from exchange.keys.publish import node_jwks
from exchange.node import Node
from exchange.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalNode:
    province: str
    home: Path
    port: int
    database_url: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalFederation:
    """Start, stop, kill and restart a handful of province nodes."""

    root: Path
    provinces: tuple[str, ...] = ("44", "50", "31")
    database_urls: dict[str, str] = field(default_factory=dict)
    dev: bool = True
    passphrase: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    subject_key: str = field(default_factory=lambda: base64.b64encode(
        secrets.token_bytes(32)).decode())
    nodes: dict[str, LocalNode] = field(default_factory=dict)

    @property
    def federation_file(self) -> Path:
        return self.root / "federation.json"

    def env(self, province: str, *, federation: bool = True) -> dict[str, str]:
        n = self.nodes[province]
        env = {
            "CERTEX_HOME": str(n.home), "CERTEX_NODE": province,
            "CERTEX_BASE_URL": n.base_url, "CERTEX_DATABASE_URL": n.database_url,
            "CERTEX_KEY_PASSPHRASE": self.passphrase, "CERTEX_SUBJECT_KEY": self.subject_key,
            "CERTEX_DEV": "1" if self.dev else "0",
        }
        if federation:
            env["CERTEX_FEDERATION"] = str(self.federation_file)
        return env

    def settings(self, province: str) -> Settings:
        e = self.env(province)
        return Settings(home=Path(e["CERTEX_HOME"]), node=province, base_url=e["CERTEX_BASE_URL"],
                        database_url=e["CERTEX_DATABASE_URL"], key_passphrase=self.passphrase,
                        subject_key=self.subject_key, dev=self.dev,
                        federation=self.federation_file)

    def setup(self) -> None:
        """Databases, migrations, node keys, and the federation file with every node's JWKS."""
        self.root.mkdir(parents=True, exist_ok=True)
        listing: dict[str, dict[str, object]] = {}
        for p in self.provinces:
            home = self.root / f"node-{p}"
            url = self.database_urls.get(p) or f"sqlite:///{home / 'var' / 'certex.db'}"
            self.nodes[p] = LocalNode(p, home, free_port(), url)
            s = Settings(home=home, node=p, base_url=self.nodes[p].base_url, database_url=url,
                         key_passphrase=self.passphrase, subject_key=self.subject_key,
                         dev=self.dev)
            migrate(s)
            node = Node.open(s, pool_size=2)
            try:
                with node.sessions.begin() as session:
                    ensure_node_keys(session, node)
                    listing[p] = {"base_url": s.base_url, "jwks": node_jwks(session, node)}
            finally:
                node.close()
        self.federation_file.write_text(json.dumps({"nodes": listing}, indent=2) + "\n")

    def start(self, province: str | None = None, timeout: float = 30.0) -> None:
        for p in [province] if province else list(self.provinces):
            n = self.nodes[p]
            log = (self.root / f"node-{p}.log").open("ab")
            n.process = subprocess.Popen(  # noqa: S603  our own CLI, fixed arguments
                [sys.executable, "-m", "exchange.cli", "serve", "--host", "127.0.0.1",
                 "--port", str(n.port)],
                env={**os.environ, **self.env(p)}, stdout=log, stderr=subprocess.STDOUT,
            )
        for p in [province] if province else list(self.provinces):
            self.wait_ready(p, timeout)

    def wait_ready(self, province: str, timeout: float = 30.0) -> None:
        n = self.nodes[province]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if n.process is not None and n.process.poll() is not None:
                raise RuntimeError(f"node {province} exited; see {self.root}/node-{province}.log")
            try:
                if httpx.get(n.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"node {province} did not become ready in {timeout} s")

    def kill(self, province: str) -> None:
        """SIGKILL: the node dies mid-whatever, as in a crash."""
        n = self.nodes[province]
        if n.process is not None:
            n.process.send_signal(signal.SIGKILL)
            n.process.wait(timeout=10)
            n.process = None

    def stop(self) -> None:
        for n in self.nodes.values():
            if n.process is not None:
                n.process.terminate()
                try:
                    n.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    n.process.kill()
                n.process = None
