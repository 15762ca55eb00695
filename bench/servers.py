"""What the bench serves: uvicorn over the node (PostgreSQL or SQLite) or the bare app, and
the node's setup (its own PostgreSQL database, ``certex init``, seeding)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs

PG_ADMIN_URL = os.environ.get(
    "CERTEX_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _check_loopback(url: str) -> None:
    from urllib.parse import urlsplit

    host = urlsplit(_plain(url)).hostname
    if host not in ("127.0.0.1", "localhost", None):
        raise RuntimeError(f"the bench only talks to 127.0.0.1, not {host}")


@dataclass
class PgDatabase:
    """A ``certex_bench_<random>`` database of our own, dropped by :meth:`drop`."""

    name: str = field(default_factory=lambda: f"certex_bench_{secrets.token_hex(6)}")
    created: bool = False

    @property
    def url(self) -> str:
        base, _, _ = PG_ADMIN_URL.rpartition("/")
        return f"{base}/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(_plain(PG_ADMIN_URL), autocommit=True, connect_timeout=10) as c:
            c.execute(sql)

    def create(self) -> None:
        _check_loopback(PG_ADMIN_URL)
        self._admin(f'CREATE DATABASE "{self.name}"')
        self.created = True

    def drop(self) -> None:
        if self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False

    def backend_pids(self) -> list[int]:
        """PostgreSQL backends connected to this database (their title names it)."""
        out = []
        needle = f" {self.name} ".encode()
        for pid in procs.postgres_pids():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if needle in title:
                out.append(pid)
        return out


def postgres_version() -> str:
    import psycopg

    with psycopg.connect(_plain(PG_ADMIN_URL), connect_timeout=10) as c:
        row = c.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


@dataclass
class NodeHome:
    """One node's settings: a temp CERTEX_HOME, a database URL and its base URL."""

    name: str
    home: Path
    database_url: str
    port: int
    province: str = "31"
    federation: Path | None = None  # CERTEX_FEDERATION, once the file exists
    passphrase: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    subject_key: str = field(
        default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTEX_")}
        env.update({
            "CERTEX_HOME": str(self.home),
            "CERTEX_DATABASE_URL": self.database_url,
            "CERTEX_BASE_URL": self.base_url,
            "CERTEX_KEY_PASSPHRASE": self.passphrase,
            "CERTEX_SUBJECT_KEY": self.subject_key,
            "CERTEX_NODE": self.province,
            "CERTEX_DEV": "false",
            "PYTHONPATH": str(procs.REPO),
        })
        if self.federation is not None:
            env["CERTEX_FEDERATION"] = str(self.federation)
        return env

    def jwks(self) -> dict[str, Any]:
        """The node's public keys as its /.well-known/jwks.json serves them."""
        from exchange.keys.publish import node_jwks
        from exchange.node import Node
        from exchange.settings import Settings

        node = Node.open(Settings(home=self.home, database_url=self.database_url,
                                  node=self.province, base_url=self.base_url,
                                  key_passphrase=self.passphrase,
                                  subject_key=self.subject_key), pool_size=1)
        try:
            with node.sessions() as session:
                return node_jwks(session, node)
        finally:
            node.close()

    def certex(self, args: list[str], log: Path, timeout: float = 120) -> tuple[str, str]:
        """Run ``certex ARGS`` for this node: (its output, the command line that worked).

        The console script first. In a virtualenv whose editable install predates
        ``migrations/__init__.py`` the script can fail to import; the same Typer app is then
        run with the repository on ``sys.path``.
        """
        script = [str(procs.VENV_BIN / "certex"), *args]
        try:
            return procs.run(script, env=self.env(), timeout=timeout, log=log), "certex"
        except RuntimeError:
            if not _stale_install(log):
                raise
            fallback = [sys.executable, "-c", "from exchange.cli.main import app; app()", *args]
            log.unlink(missing_ok=True)
            out = procs.run(fallback, env=self.env(), timeout=timeout, log=log)
            return out, "python -c 'from exchange.cli.main import app; app()' (stale install)"

    def init(self, logdir: Path) -> str:
        """``certex init --no-demo``; the command line that worked."""
        _, how = self.certex(["init", "--no-demo"], logdir / f"init-{self.name}.log")
        return f"{how} init --no-demo"

    def seed(self, logdir: Path, subjects: int, synthetic: int, *extra: str) -> dict[str, Any]:
        out = self.home / "world.json"
        cmd = [sys.executable, "-m", "bench.world", "--out", str(out),
               "--subjects", str(subjects), "--synthetic", str(synthetic), *extra]
        procs.run(cmd, env=self.env(), timeout=900, log=logdir / f"seed-{self.name}.log")
        world: dict[str, Any] = json.loads(out.read_text())
        return world


def _stale_install(log: Path) -> bool:
    text = procs.tail(log, 20_000)
    return "migrations" in text and ("NoneType" in text or "ModuleNotFoundError" in text)


@dataclass
class Server:
    """``uvicorn APP --factory`` on 127.0.0.1 with the bench's settings, as a child process."""

    name: str
    app: str
    port: int
    workers: int
    env: dict[str, str]
    logdir: Path
    health: str
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [str(procs.VENV_BIN / "uvicorn"), self.app, "--factory", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers), "--no-access-log",
                "--log-level", "warning"]

    def start(self) -> None:
        log = self.logdir / f"server-{self.name}.log"
        self.proc = procs.spawn(self.command(), env=self.env, log=log)
        procs.wait_http(f"http://127.0.0.1:{self.port}{self.health}", self.proc, 60, log)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the one process, or the supervisor's workers."""
        assert self.proc is not None
        tree = procs.descendants(self.proc.pid)
        if self.workers == 1:
            return [self.proc.pid]
        return [p for p in tree if p != self.proc.pid] or [self.proc.pid]

    def all_pids(self) -> list[int]:
        assert self.proc is not None
        return procs.descendants(self.proc.pid)

    def peak_rss_mb(self) -> float:
        """The largest VmHWM (peak resident set) among the serving processes, in MB."""
        return max(procs.status_kb(p, "VmHWM") for p in self.worker_pids()) / 1024

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None
