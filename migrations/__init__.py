"""Alembic migrations for the citykey database (PostgreSQL and SQLite)."""
