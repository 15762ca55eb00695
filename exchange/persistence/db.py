"""Engine and session construction. Nothing here runs at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip on every checkout. A connection the server dropped
    # fails its statement instead; SQLAlchemy then invalidates the whole pool, so one request
    # (or one ledger batch, which is retried) sees the error and the next ones reconnect.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size // 2 + 2)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Python's sqlite3 opens transactions lazily and lets reads and writes interleave;
        # we take over with explicit BEGIN so a write transaction can be BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # durability first: fsync on every commit
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE by default: a deferred transaction that reads and then writes can fail
        # at once with "database is locked" when another writer got there first (WAL cannot
        # upgrade a stale read snapshot), which busy_timeout does not cover.
        mode = conn.get_execution_options().get("sqlite_begin", "BEGIN IMMEDIATE")
        conn.exec_driver_sql(mode)


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """A session factory. ``read_only`` sessions start deferred SQLite transactions (``BEGIN``),
    so reads never wait for — or block — the write lock; they must not write."""
    if read_only:
        if engine.dialect.name == "postgresql":
            # Each statement its own snapshot: no BEGIN and ROLLBACK round trips around the
            # one or two SELECTs a read-only request makes.
            return sessionmaker(
                engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
            )
        return sessionmaker(engine.execution_options(sqlite_begin="BEGIN"), expire_on_commit=False)
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
