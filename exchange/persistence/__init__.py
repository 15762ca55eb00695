"""Persistence: SQLAlchemy models, engine setup and repositories."""
