"""``INSERT … ON CONFLICT DO NOTHING`` for PostgreSQL and SQLite: claim a key in one statement.

A savepoint around a plain INSERT costs two extra round trips (SAVEPOINT, RELEASE) and a
flush of the unit of work; claiming a random key (a status index, a certificate serial) is
the hot path of issuance, so it is one statement whose row count says who won.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def claim_row(session: Session, model: type[Any], values: dict[str, Any]) -> bool:
    """Insert ``values`` into ``model``'s table unless its key is taken; True if inserted.

    The row is written in the session's transaction (visible to it at once, committed with
    it); a concurrent transaction holding the same key makes this wait for it, as a plain
    INSERT would, and then report False if that one committed.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = model.__table__
    key = next(iter(table.primary_key.columns))
    # RETURNING says whether the row went in (psycopg reports no row count for this form).
    stmt = insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return session.execute(stmt).first() is not None
