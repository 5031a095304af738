"""The rate-limit arithmetic (pure, fake clock) and its SQL twin on real PostgreSQL and SQLite:
both give the same verdicts for the same events."""

import asyncio
import random
import secrets
import statistics
import time
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from api.limits.store import RateLimitStore
from api.limits.window import Limit, admit
from api.migrate import upgrade
from tests.conftest import ApiHarness


def run(times: list[float], limit: Limit) -> list[tuple[bool, float, float]]:
    events: list[float] = []
    verdicts = []
    for now in times:
        verdict, recorded = admit(events, now, limit)
        events = recorded if recorded is not None else events
        verdicts.append((verdict.allowed, verdict.retry_after_s, verdict.next_after_s))
    return verdicts


def test_ten_per_minute_means_ten_in_any_minute() -> None:
    limit = Limit(10, 60.0)
    verdicts = run([float(i) for i in range(11)], limit)
    assert [v[0] for v in verdicts] == [True] * 10 + [False]
    assert verdicts[9][2] == pytest.approx(51.0)  # the 10th says: the next fits at 60
    assert verdicts[10][1] == pytest.approx(50.0)
    # At 60 the first event leaves the window; a refused event does not extend the wait.
    times = [float(i) for i in range(10)] + [59.9, 59.9, 60.0, 60.1, 61.0]
    assert [v[0] for v in run(times, limit)][10:] == [False, False, True, False, True]
    # Never more than 10 in any 60 s interval, however the events are spread.
    rng = random.Random(5)
    spread = sorted(rng.uniform(0, 600) for _ in range(2000))
    allowed = [t for t, v in zip(spread, run(spread, limit), strict=True) if v[0]]
    assert max(sum(1 for u in allowed if t <= u < t + 60) for t in allowed) == 10
    assert len(allowed) >= 95  # and the limit is used: about 10 per minute over 10 minutes


def test_a_limit_needs_a_count_and_a_window() -> None:
    with pytest.raises(ValueError, match="count"):
        Limit(0, 60.0)


async def _same_as_pure(session: AsyncSession, limit: Limit, seed: int) -> int:
    store = RateLimitStore()
    rng = random.Random(seed)
    key = f"test:{secrets.token_hex(6)}"
    now = 1_900_000_000.0
    times = []
    for _ in range(200):
        now += rng.choice((0.0, 0.1, 1.0, 3.0, 7.0, 20.0))
        times.append(now)
    expected = run(times, limit)
    for now, (allowed, retry, following) in zip(times, expected, strict=True):
        verdict = await store.hit(session, key, limit, now)
        assert verdict.allowed == allowed
        assert verdict.retry_after_s == pytest.approx(retry, abs=1e-6)
        assert verdict.next_after_s == pytest.approx(following, abs=1e-6)
    await session.commit()
    return sum(1 for e in expected if e[0])


async def test_sql_matches_the_pure_function_on_postgres(api: ApiHarness) -> None:
    async with api.state.sessions() as session:
        admitted = await _same_as_pure(session, Limit(10, 60.0), seed=1)
    assert 0 < admitted < 200


async def test_sql_matches_the_pure_function_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'limits.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_async_engine(url)
    try:
        async with AsyncSession(engine) as session:
            await _same_as_pure(session, Limit(5, 30.0), seed=2)
    finally:
        await engine.dispose()


async def test_purge_removes_only_rows_that_no_longer_limit(api: ApiHarness) -> None:
    store = RateLimitStore()
    limit = Limit(2, 10.0)
    stale, live = f"test:{secrets.token_hex(6)}", f"test:{secrets.token_hex(6)}"
    async with api.state.sessions() as session:
        await store.hit(session, stale, limit, 1000.0)  # window empty from 1010 on
        await store.hit(session, live, limit, 1005.0)
        await store.hit(session, live, limit, 1005.0)  # full until 1015
        await store.purge(session, 1012.0)
        assert not (await store.hit(session, live, limit, 1012.0)).allowed
        assert (await store.hit(session, live, limit, 1015.0)).allowed
        await session.rollback()


async def test_cost_of_one_limit_check(api: ApiHarness) -> None:
    """Prints what one check costs on this machine (one per unlock request)."""
    store = RateLimitStore()
    limit = Limit(1_000, 60.0)
    samples = []
    run_id = secrets.token_hex(4)
    async with api.state.sessions() as session:
        for i in range(300):
            started = time.perf_counter()
            await store.hit(session, f"bench:{run_id}:{i % 20}", limit, time.time())
            samples.append((time.perf_counter() - started) * 1000)
        await session.rollback()
    samples.sort()
    print(
        f"\nrate limit check (one UPSERT on PostgreSQL, inside a transaction): "
        f"p50 {statistics.median(samples):.3f} ms, p99 {samples[int(len(samples) * 0.99)]:.3f} ms"
    )
