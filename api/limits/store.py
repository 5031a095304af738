"""The rate-limit SQL: one statement per event on PostgreSQL, shared by every API instance.

:func:`api.limits.window.admit` as one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: the
UPSERT's row lock serializes concurrent events on the same key (across instances too), the
``WHERE`` refuses an event when the window is full, ``RETURNING`` says which happened. Only a
refusal costs a second statement (reading the window for Retry-After). SQLite (the demo, one
writer at a time) takes the write lock and does the same in Python.
"""

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.limits.models import RateLimitBucket
from api.limits.window import Limit, Verdict, admit, live_events, wait_for_room

_table = RateLimitBucket.__table__  # type: ignore[attr-defined]

PURGE_EVERY = 1000
"""Events between two purges of rows whose window is empty (such a row limits nothing, like a
missing row, so deleting it changes no verdict)."""
PURGE_BATCH = 500

_UPSERT = text(
    """
INSERT INTO rate_limits AS r (key, events, expires_at)
VALUES (:key, ARRAY[CAST(:now AS double precision)], CAST(:now AS double precision) + :window)
ON CONFLICT (key) DO UPDATE SET
    events = ARRAY(
        SELECT e FROM unnest(r.events || CAST(:now AS double precision)) AS e
        WHERE e > CAST(:now AS double precision) - :window ORDER BY e
    ),
    expires_at = CAST(:now AS double precision) + :window
WHERE (
    SELECT count(*) FROM unnest(r.events) AS e WHERE e > CAST(:now AS double precision) - :window
) < :count
RETURNING events
"""
)


class RateLimitStore:
    """Sliding windows in the ``rate_limits`` table. Runs in the caller's session: commit or
    roll back with it (a refused event changes nothing either way)."""

    def __init__(self) -> None:
        self._hits = 0

    async def hit(self, session: AsyncSession, key: str, limit: Limit, now: float) -> Verdict:
        """Count one event for ``key`` at ``now`` (Unix seconds) if it fits in ``limit``."""
        self._hits += 1
        if self._hits % PURGE_EVERY == 0:
            await self.purge(session, now)
        if session.get_bind().dialect.name != "postgresql":
            return await self._hit_in_python(session, key, limit, now)
        params = {"key": key, "now": now, "window": limit.window_s, "count": limit.count}
        admitted = (await session.execute(_UPSERT, params)).first()
        if admitted is not None:
            return Verdict(True, 0.0, wait_for_room(sorted(admitted[0]), now, limit))
        events = (
            await session.execute(select(_table.c.events).where(_table.c.key == key))
        ).scalar()
        live = live_events(events or [], now, limit)
        return Verdict(False, wait_for_room(live, now, limit))

    async def _hit_in_python(
        self, session: AsyncSession, key: str, limit: Limit, now: float
    ) -> Verdict:
        # The INSERT comes first: it takes SQLite's write lock before the window is read.
        ensure = sqlite.insert(_table).values(key=key, events=[], expires_at=0.0)
        await session.execute(ensure.on_conflict_do_nothing())
        events = (
            await session.execute(select(_table.c.events).where(_table.c.key == key))
        ).scalar()
        verdict, recorded = admit(events or [], now, limit)
        if recorded is not None:
            await session.execute(
                update(_table)
                .where(_table.c.key == key)
                .values(events=recorded, expires_at=recorded[-1] + limit.window_s)
            )
        return verdict

    async def purge(self, session: AsyncSession, now: float) -> None:
        """Delete up to PURGE_BATCH rows whose window is empty."""
        stale = select(_table.c.key).where(_table.c.expires_at <= now).limit(PURGE_BATCH)
        if session.get_bind().dialect.name == "postgresql":
            stale = stale.with_for_update(skip_locked=True)  # never wait for a busy key
        await session.execute(delete(_table).where(_table.c.key.in_(stale)))
