"""The Alembic history builds exactly the schema the models describe, on both databases."""

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from api.migrate import upgrade
from api.models import metadata


def schema_drift(database_url: str) -> list[Any]:
    """Differences between the migrated database and the models (empty = no drift)."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async def run() -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_postgres_schema_matches_models(pg_database_url: str) -> None:
    # pg_database_url was created empty and brought to head by `alembic upgrade head`.
    assert schema_drift(pg_database_url) == []


def test_migrations_run_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'citykey.db'}"
    upgrade(url)
    assert schema_drift(url) == []
