"""Access-policy benchmark at city scale, on real PostgreSQL.

Seeds a fresh database with 100,000 citizens, 2,000 doors (200 buildings x 10, on 400
gateways) and 1,000,000 grants (door and building grants, some with weekly schedules, some
expired, revoked, or through groups) with COPY, then reports p50/p99 of:
  - the authorization decision (AccessService.decide: the same code the unlock path runs),
  - GET /v1/me/doors through a real API process (uvicorn, one worker),
with a baseline measured in the same run: a primary-key lookup of one user (the floor of a
database round trip through the same engine) and GET /healthz of the same server.

Run: .venv/bin/python bench/policy.py [--citizens 100000 --doors 2000 --grants 1000000]
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.access.service import AccessService
from api.db import create_engine, session_factory
from api.identity.dev_provider import DevIdentityProvider
from api.identity.models import User
from api.keys.keyring import KeyRing
from api.migrate import upgrade
from api.settings import Settings
from bench.common import free_port, percentile, wait_for_port

PG_ADMIN = os.environ.get("CITYKEY_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
DOORS_PER_BUILDING = 10
DOORS_PER_GATEWAY = 5
SCHEDULE = json.dumps(
    {"weekly": [{"weekday": d, "start": "07:00:00", "end": "23:00:00"} for d in range(7)]}
)


def ms(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms"
        f"  (n={len(values)})"
    )


async def seed(dsn: str, citizens: int, doors: int, grants: int, rng: random.Random) -> None:
    """Bulk-load the city with COPY (minutes with ORM inserts, seconds this way)."""
    now = datetime.now(UTC)
    connection = await asyncpg.connect(dsn)
    try:
        buildings = doors // DOORS_PER_BUILDING
        gateways = doors // DOORS_PER_GATEWAY
        await connection.copy_records_to_table(
            "owners", records=[("own_city", "City", now)], columns=["id", "name", "created_at"]
        )
        await connection.copy_records_to_table(
            "buildings",
            records=[
                (f"b{b}", f"Building {b}", "own_city", "Europe/Oslo", 0, now)
                for b in range(buildings)
            ],
            columns=["id", "name", "owner_id", "timezone", "mode_version", "created_at"],
        )
        await connection.copy_records_to_table(
            "gateways",
            records=[
                (
                    f"g{g}",
                    f"Gateway {g}",
                    f"b{g * DOORS_PER_GATEWAY // DOORS_PER_BUILDING}",
                    False,
                    0,
                    now,
                )
                for g in range(gateways)
            ],
            columns=["id", "name", "building_id", "online", "mode_version", "created_at"],
        )
        await connection.copy_records_to_table(
            "doors",
            records=[
                (
                    f"d{d}",
                    f"Door {d}",
                    f"b{d // DOORS_PER_BUILDING}",
                    f"g{d // DOORS_PER_GATEWAY}",
                    d % DOORS_PER_GATEWAY + 1,
                    5,
                    True,
                    now,
                )
                for d in range(doors)
            ],
            columns=[
                "id",
                "name",
                "building_id",
                "gateway_id",
                "channel",
                "default_unlock_seconds",
                "enabled",
                "created_at",
            ],
        )
        await connection.copy_records_to_table(
            "users",
            records=[(f"u{u}", f"Citizen {u}", '["citizen"]', now) for u in range(citizens)],
            columns=["id", "display_name", "roles", "created_at"],
        )
        groups = max(1, citizens // 200)
        await connection.copy_records_to_table(
            "groups",
            records=[(f"grp{g}", "own_city", f"Group {g}", "", now) for g in range(groups)],
            columns=["id", "owner_id", "name", "description", "created_at"],
        )
        await connection.copy_records_to_table(
            "group_members",
            records=[(f"grp{u % groups}", f"u{u}", now) for u in range(0, citizens, 4)],
            columns=["group_id", "user_id", "added_at"],
        )

        def grant_rows() -> Iterator[tuple[object, ...]]:
            for i in range(grants):
                roll = rng.random()
                user: str | None = f"u{rng.randrange(citizens)}"
                group = None
                if roll < 0.01:  # a few group grants, each reaching ~50 members
                    user, group = None, f"grp{rng.randrange(groups)}"
                building_grant = rng.random() < 0.3
                door = None if building_grant else f"d{rng.randrange(doors)}"
                building = f"b{rng.randrange(buildings)}" if building_grant else None
                until = now - timedelta(days=1) if rng.random() < 0.1 else None
                revoked = now - timedelta(hours=1) if rng.random() < 0.05 else None
                schedule = SCHEDULE if rng.random() < 0.2 else None
                yield (
                    f"gr{i}",
                    user,
                    group,
                    door,
                    building,
                    until,
                    schedule,
                    True,
                    0,
                    False,
                    "",
                    now,
                    revoked,
                )

        await connection.copy_records_to_table(
            "grants",
            records=grant_rows(),
            columns=[
                "id",
                "user_id",
                "group_id",
                "door_id",
                "building_id",
                "valid_until",
                "schedule",
                "respect_holidays",
                "use_count",
                "shareable",
                "note",
                "created_at",
                "revoked_at",
            ],
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=100_000)
    parser.add_argument("--doors", type=int, default=2_000)
    parser.add_argument("--grants", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2_000)
    args = parser.parse_args()
    rng = random.Random(7)

    db_name = f"citykey_policy_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{db_name}"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
    server: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(upgrade, url)
        started = time.perf_counter()
        await seed(dsn, args.citizens, args.doors, args.grants, rng)
        print(f"citykey policy benchmark  ({os.cpu_count()} cores, PostgreSQL)")
        print(
            f"seeded {args.citizens:,} citizens, {args.doors:,} doors, {args.grants:,} grants "
            f"in {time.perf_counter() - started:.1f} s\n"
        )

        settings = Settings(database_url=url)
        engine = create_engine(settings)
        sessions = session_factory(engine)
        pairs = [
            (f"u{rng.randrange(args.citizens)}", f"d{rng.randrange(args.doors)}")
            for _ in range(args.samples)
        ]
        floor: list[float] = []
        decision: list[float] = []
        allowed = 0
        async with sessions() as session:
            for user_id, _ in pairs[:200]:  # warm-up: pool, plans, caches
                await AccessService(session).decide(
                    User(id=user_id, display_name="", roles=[]), "d0", datetime.now(UTC)
                )
            for user_id, door_id in pairs:
                t0 = time.perf_counter()
                user = await session.get(User, user_id)
                floor.append((time.perf_counter() - t0) * 1000)
                assert user is not None
                t0 = time.perf_counter()
                found = await AccessService(session).decide(user, door_id, datetime.now(UTC))
                decision.append((time.perf_counter() - t0) * 1000)
                assert found is not None
                allowed += found[1].allowed
                session.expunge_all()
        await engine.dispose()
        print(f"baseline    user by primary key        {ms(floor)}")
        print(
            f"decision    AccessService.decide       {ms(decision)}  "
            f"({allowed / len(pairs):.1%} allowed)"
        )
        print(
            f"            ratio decision/baseline p50 "
            f"{statistics.median(decision) / statistics.median(floor):.1f}x\n"
        )

        work = Path(tempfile.mkdtemp(prefix="citykey-policy-"))
        KeyRing.initialize(work / "keys")
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "CITYKEY_DATABASE_URL": url,
            "CITYKEY_KEY_DIR": str(work / "keys"),
            "CITYKEY_ISSUER": issuer,
            "CITYKEY_EMBEDDED_BROKER_PORT": str(free_port()),
        }
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "citykey"),
                "serve",
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port, 30)
        idp = DevIdentityProvider.load(work / "keys", issuer, "citykey-api")
        users = [f"u{rng.randrange(args.citizens)}" for _ in range(args.samples // 2)]
        tokens = {u: idp.issue(u) for u in users}
        async with httpx.AsyncClient(base_url=issuer, timeout=10) as client:
            health: list[float] = []
            mine: list[float] = []
            sizes: list[int] = []
            for user_id in users[:100]:
                await client.get(
                    "/v1/me/doors", headers={"Authorization": f"Bearer {tokens[user_id]}"}
                )
            for user_id in users:
                t0 = time.perf_counter()
                await client.get("/healthz")
                health.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                response = await client.get(
                    "/v1/me/doors", headers={"Authorization": f"Bearer {tokens[user_id]}"}
                )
                mine.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"/v1/me/doors answered {response.status_code}: {response.text[:200]}"
                    )
                sizes.append(sum(len(b["doors"]) for b in response.json()))
        print(f"baseline    GET /healthz               {ms(health)}")
        print(
            f"me/doors    GET /v1/me/doors           {ms(mine)}  "
            f"(median {statistics.median(sizes):.0f} doors listed)"
        )
        print(
            f"            ratio me-doors/healthz p50 "
            f"{statistics.median(mine) / statistics.median(health):.1f}x"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
