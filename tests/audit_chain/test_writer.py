"""The batched audit writer (api/audit/writer.py) against real PostgreSQL: concurrent appends
share transactions, mixed with the per-session path and a second engine, cancelled waiters
included, and the chain stays intact with every record in it exactly once."""

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from api.audit import chain
from api.audit.models import AuditEvent
from api.audit.writer import AuditWriter
from api.migrate import upgrade
from tests.audit_chain.support import fresh_database, random_event
from tests.audit_chain.test_sqlite import sqlite_engine

WRITERS = 40
PER_WRITER = 10


@pytest.fixture(scope="module")
def writer_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def test_concurrent_appends_are_batched_and_the_chain_stays_intact(writer_url: str) -> None:
    engine = create_async_engine(writer_url)
    other = create_async_engine(writer_url)  # a second API instance, appending per session
    commits = 0

    @event.listens_for(engine.sync_engine, "commit")
    def _count(*_: object) -> None:
        nonlocal commits
        commits += 1

    writer = AuditWriter.for_engine(engine)
    assert AuditWriter.for_engine(engine) is writer
    rng = random.Random(11)

    async def append(record: AuditEvent) -> AuditEvent:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            return await writer.append(record, session)

    try:

        async def batched(n: int) -> list[AuditEvent]:
            return [await append(random_event(rng, n * 100 + i)) for i in range(PER_WRITER)]

        async def per_session(n: int) -> None:
            for i in range(PER_WRITER):
                async with AsyncSession(other) as session:
                    chain.append(session, random_event(rng, 90_000 + n * 100 + i))
                    await session.commit()

        async def gives_up(n: int) -> None:
            # Stops waiting at once. Queued, its record is still written (like a commit that
            # lands after its caller left); alone, it was in its own transaction, rolled back.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await append(random_event(rng, 80_000 + n))

        # The first one finds the writer idle (its own transaction, rolled back); the later
        # ones are queued behind a write in flight and are written without their callers.
        results = await asyncio.gather(
            gives_up(0),
            *(batched(n) for n in range(WRITERS)),
            *(per_session(n) for n in range(3)),
            *(gives_up(n) for n in range(1, 5)),
        )
        written = [record for batch in results[1 : WRITERS + 1] if batch for record in batch]
        assert all(record.id is not None and record.hash is not None for record in written)
        await asyncio.sleep(0.5)  # background write of the given-up records, if any

        async with AsyncSession(engine) as session:
            total = (await session.execute(select(func.count()).select_from(AuditEvent))).scalar()
            result = await chain.verify_chain(session)
        expected = WRITERS * PER_WRITER + 3 * PER_WRITER + 4
        assert result.intact, result.broken
        assert total == result.checked == expected
        # Fewer transactions than records: concurrent appends shared them.
        assert commits < WRITERS * PER_WRITER
        print(
            f"\naudit writer: {WRITERS * PER_WRITER} batched appends by {WRITERS} concurrent "
            f"requests in {commits} transactions; chain of {expected} records intact"
        )
    finally:
        await engine.dispose()
        await other.dispose()


async def test_batched_appends_on_sqlite(tmp_path: Path) -> None:
    """The demo database: the writer takes SQLite's write lock like a flush does."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'writer.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = sqlite_engine(url)
    writer = AuditWriter.for_engine(engine)
    rng = random.Random(5)
    try:

        async def append(record: AuditEvent) -> AuditEvent:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                return await writer.append(record, session)

        await asyncio.gather(*(append(random_event(rng, n)) for n in range(60)))
        async with AsyncSession(engine) as session:
            result = await chain.verify_chain(session)
        assert result.intact, result.broken
        assert result.checked == 60
    finally:
        await engine.dispose()
