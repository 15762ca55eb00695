"""Test fixtures: a real database per test (SQLite file or PostgreSQL database), migrated by
alembic once into a template and cloned, a real node with real keys, and the real app.

``CERTEX_TEST_DB`` chooses the backend (``sqlite`` default, ``postgres``); PostgreSQL is reached
at ``CERTEX_TEST_PG_URL``. Each PostgreSQL run creates its own databases and drops them.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from exchange.persistence.migrate import upgrade

BACKEND = os.environ.get("CERTEX_TEST_DB", "sqlite")
PG_URL = os.environ.get("CERTEX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEST_PASSPHRASE = "test-passphrase-not-secret-0123456789"
TEST_SUBJECT_KEY = base64.b64encode(b"k" * 32).decode()
BASE_URL = "https://node31.certex.test"


@dataclass
class DatabaseFactory:
    """Hands out fresh, migrated databases cloned from one template."""

    backend: str
    workdir: Path
    template: str
    created: list[str]

    def new(self) -> str:
        name = f"certex_t_{uuid.uuid4().hex[:12]}"
        if self.backend == "sqlite":
            path = self.workdir / f"{name}.db"
            shutil.copyfile(self.workdir / f"{self.template}.db", path)
            return f"sqlite:///{path}"
        _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if self.backend != "sqlite":
            for name in [*self.created, self.template]:
                _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(sql: str) -> None:
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def db_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    workdir = tmp_path_factory.mktemp("db")
    template = f"certex_tpl_{uuid.uuid4().hex[:12]}"
    if BACKEND == "sqlite":
        upgrade(f"sqlite:///{workdir / f'{template}.db'}")
    elif BACKEND == "postgres":
        _pg_admin(f'CREATE DATABASE "{template}"')
        upgrade(make_url(PG_URL).set(database=template).render_as_string(hide_password=False))
    else:
        raise pytest.UsageError(f"CERTEX_TEST_DB must be sqlite or postgres, not {BACKEND!r}")
    factory = DatabaseFactory(BACKEND, workdir, template, [])
    yield factory
    factory.drop_all()


@pytest.fixture
def database_url(db_factory: DatabaseFactory) -> str:
    return db_factory.new()


@pytest.fixture
def settings(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    from exchange.settings import Settings

    return Settings(
        home=tmp_path,
        database_url=database_url,
        node="31",
        base_url=BASE_URL,
        key_passphrase=TEST_PASSPHRASE,
        subject_key=TEST_SUBJECT_KEY,
        dev=False,
    )


@pytest.fixture
def clock():  # type: ignore[no-untyped-def]
    from exchange.clock import FixedClock

    return FixedClock(float(int(time.time())))


@pytest.fixture
def node(settings, clock):  # type: ignore[no-untyped-def]
    from exchange.bootstrap import ensure_node_keys
    from exchange.node import Node

    n = Node.open(settings, clock, pool_size=5)
    with n.sessions.begin() as session:
        ensure_node_keys(session, n)
    yield n
    n.close()


@pytest.fixture
def app(node):  # type: ignore[no-untyped-def]
    from gateway.app import create_app

    return create_app(node)


@pytest.fixture
def http(app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def live_server(app):  # type: ignore[no-untyped-def]
    """The real app served by uvicorn on a free loopback port, for concurrency tests."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            limit_concurrency=200)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)
