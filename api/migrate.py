"""Run Alembic migrations from code (CLI, demo, tests) without an ini file."""

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database to ``revision``. Blocking: call via asyncio.to_thread from async code."""
    command.upgrade(alembic_config(database_url), revision)


def newest_revision() -> str:
    """The head revision of the migrations shipped with this code."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at; None for a database that was never migrated."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(text("SELECT version_num FROM alembic_version"))
            return result.scalar_one_or_none()
    except (OperationalError, ProgrammingError) as exc:
        if "alembic_version" in str(exc):
            return None  # no such table: never migrated
        raise
    finally:
        await engine.dispose()
