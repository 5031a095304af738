"""The chain on SQLite (the demo database): concurrent writers on separate engines still link
records in id order, and a changed record is found."""

import asyncio
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from api.audit.chain import verify_chain
from api.migrate import upgrade
from tests.audit_chain.support import build_chain


def sqlite_engine(url: str) -> AsyncEngine:
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")  # as api/db.py
        cursor.close()

    return engine


async def test_chain_on_sqlite_with_concurrent_writers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chain.db'}"
    await asyncio.to_thread(upgrade, url)
    engines = [sqlite_engine(url), sqlite_engine(url)]
    try:
        await build_chain(engines, 120, writers=4, seed=3)
        async with engines[0].connect() as conn:
            async with AsyncSession(bind=conn) as session:
                result = await verify_chain(session, batch=25)
            assert result.intact, result.broken
            assert result.checked == 120
            victim = (
                await conn.execute(
                    text("SELECT id FROM audit_events ORDER BY id LIMIT 1 OFFSET 60")
                )
            ).scalar()
            await conn.execute(
                text("UPDATE audit_events SET actor = 'u-intruder' WHERE id = :id"), {"id": victim}
            )
            async with AsyncSession(bind=conn) as session:
                result = await verify_chain(session)
            assert result.broken is not None
            assert (result.broken.record_id, result.broken.problem) == (victim, "content_changed")
            assert result.checked == 60
    finally:
        for engine in engines:
            await engine.dispose()
