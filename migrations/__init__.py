"""Alembic migrations of the node schema (run by ``certex init`` and the test fixtures)."""
