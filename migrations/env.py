"""Alembic environment: the URL comes from the caller (``certex init``) or from CERTEX_ settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from exchange.persistence.db import make_engine
from exchange.persistence.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from exchange.settings import Settings

        url = Settings().effective_database_url
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `certex init`")
run_migrations_online()
