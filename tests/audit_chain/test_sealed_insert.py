"""The one-statement seal (api/audit/chain.py ``insert_sealed``, migration 0004): PostgreSQL
hashes each record from the two halves of its canonical JSON around the id it draws; the
result must be exactly the chain ``chain_hash`` computes and ``citykey audit verify`` checks,
for every kind of content (unicode, floats, nested detail, missing fields)."""

import random
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from api.audit import chain
from api.audit.models import AuditEvent
from tests.audit_chain.support import fresh_database, random_event


@pytest.fixture(scope="module")
def sealed_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def test_canonical_parts_surround_any_id() -> None:
    rng = random.Random(5)
    for n in range(300):
        record = random_event(rng, n)
        head, tail = chain.canonical_parts(record)
        for record_id in (1, 9, 10, 4_294_967_296):
            record.id = record_id
            assert (head + str(record_id) + tail).encode() == chain.canonical(record)


async def test_database_sealed_records_hash_as_python_does(sealed_url: str) -> None:
    engine = create_async_engine(sealed_url)
    rng = random.Random(17)
    try:
        written: list[AuditEvent] = []
        for size in (1, 3, 1, 7, 2):
            batch = [random_event(rng, len(written) + i) for i in range(size)]
            batch[0].latency_ms = 1e-05  # a float whose text differs between encoders
            async with engine.begin() as connection:
                await chain.insert_sealed(connection, batch)
            written += batch
        # Interleaved with the ORM flush path (citykey_audit_reserve): one chain.
        async with AsyncSession(engine) as session:
            chain.append(session, random_event(rng, 999))
            await session.commit()
        async with engine.begin() as connection:
            await chain.insert_sealed(connection, [random_event(rng, 1000)])

        prev = chain.GENESIS
        for record in written:
            assert record.prev_hash == prev
            assert record.hash == chain.chain_hash(prev, record)
            prev = record.hash
        async with AsyncSession(engine) as session:
            result = await chain.verify_chain(session)
        assert result.intact, result.broken
        assert result.checked == len(written) + 2
    finally:
        await engine.dispose()
