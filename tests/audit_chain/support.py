"""Helpers of the audit chain tests: a fresh, migrated PostgreSQL database of their own (so the
chain starts at the genesis and tampering never touches the suite's shared database), and
realistic audit records appended through the one insert path (api.audit.chain.append)."""

import asyncio
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.audit import chain
from api.audit.models import AuditEvent
from api.migrate import upgrade
from tests.conftest import PG_ADMIN_URL

ACTIONS = ("unlock.requested", "unlock.completed", "grant.created", "door.updated")
T0 = datetime(2029, 5, 1, 8, 0, tzinfo=UTC)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database brought to head by the migrations; dropped afterwards (asyncpg URL)."""
    name = f"citykey_chain_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        url = f"postgresql+asyncpg://{urlsplit(PG_ADMIN_URL).netloc}/{name}"
        upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def random_event(rng: random.Random, n: int) -> AuditEvent:
    """An audit record like the ones the API writes, with varied content (unicode, floats,
    nested detail, missing fields)."""
    action = rng.choice(ACTIONS)
    unlock = action.startswith("unlock")
    return AuditEvent(
        ts=T0 + timedelta(seconds=n, microseconds=rng.randrange(1_000_000)),
        actor=f"u-{rng.randrange(50):03d}",
        action=action,
        building_id=f"bld-{rng.randrange(5)}",
        door_id=f"door-{rng.randrange(20)}" if unlock else None,
        gateway_id=f"gw-{rng.randrange(5)}" if unlock else None,
        decision=rng.choice(("allow", "deny")) if unlock else None,
        reason=rng.choice((None, "no_grant", "outside_schedule")),
        command_id=secrets.token_hex(8) if unlock else None,
        result=rng.choice((None, "unlocked", "timeout")),
        latency_ms=round(rng.uniform(0.5, 900.0), 3) if unlock else None,
        detail={"rule_id": f"grt-{n}", "note": "Grünerløkka bibliotek", "n": [n, n * 0.5]}
        if rng.random() < 0.5
        else {},
    )


async def append_batches(
    sessions: async_sessionmaker[AsyncSession], rng: random.Random, records: int
) -> int:
    """Append ``records`` records in transactions of 1 to 3; about one transaction in five is
    rolled back after its flush (leaving a gap in the ids, as a failed request does).
    Returns how many transactions were rolled back."""
    written = rolled_back = 0
    while written < records:
        size = min(rng.choice((1, 1, 2, 3)), records - written)
        async with sessions() as session:
            for _ in range(size):
                chain.append(session, random_event(rng, written))
            if rng.random() < 0.2:
                await session.flush()
                await session.rollback()
                rolled_back += 1
                continue
            await session.commit()
        written += size
    return rolled_back


async def build_chain(
    engines: list[AsyncEngine], total: int, writers: int, seed: int
) -> tuple[int, float]:
    """``writers`` concurrent writers spread over ``engines`` (separate pools, like separate
    API instances) append ``total`` records. Returns (rolled-back transactions, seconds)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    factories = [async_sessionmaker(e, expire_on_commit=False) for e in engines]
    share = [total // writers + (1 if i < total % writers else 0) for i in range(writers)]
    results = await asyncio.gather(
        *(
            append_batches(factories[i % len(factories)], random.Random(seed + i), share[i])
            for i in range(writers)
        )
    )
    return sum(results), loop.time() - started
