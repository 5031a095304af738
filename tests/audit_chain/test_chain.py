"""The audit hash chain on real PostgreSQL: built by concurrent writers through the one insert
path, then tampered with 100 times as the database owner (who, unlike the API's role, can
update and delete): every tampering is detected, and the first broken record is named.

Each tampering runs in a transaction that is rolled back after `verify`, so every case starts
from the intact chain.
"""

import asyncio
import json
import os
import random
import secrets
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from api.audit.chain import GENESIS, chain_hash, verify_chain
from tests.audit_chain.support import T0, build_chain, fresh_database

RECORDS = 300
TAMPERINGS = 100
COLUMNS = (
    "id, ts, actor, action, building_id, door_id, gateway_id, decision, reason, command_id, "
    "result, latency_ms, detail, prev_hash, hash"
)


@pytest.fixture(scope="module")
def chain_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def engine(chain_url: str) -> Any:
    engine = create_async_engine(chain_url)
    yield engine
    await engine.dispose()


@dataclass(frozen=True)
class Expected:
    record_id: int
    problem: str


async def rows(conn: AsyncConnection) -> list[Any]:
    return list((await conn.execute(text(f"SELECT {COLUMNS} FROM audit_events ORDER BY id"))).all())


def following(ids: list[int], record_id: int) -> int | None:
    later = [i for i in ids if i > record_id]
    return later[0] if later else None


async def tamper(
    conn: AsyncConnection, kind: str, chain: list[Any], rng: random.Random
) -> Expected:
    """Apply one tampering of ``kind`` to the chain and say what verify must report."""
    ids = [r.id for r in chain]
    victim = rng.choice(chain)
    after = following(ids, victim.id)
    if kind == "modify":
        column, value = rng.choice(
            [
                ("actor", "u-intruder"),
                ("action", "unlock.forged"),
                ("decision", "allow" if victim.decision != "allow" else "deny"),
                ("reason", "edited"),
                ("result", "unlocked" if victim.result != "unlocked" else "timeout"),
                ("door_id", "door-elsewhere"),
                ("command_id", secrets.token_hex(8)),
                ("latency_ms", (victim.latency_ms or 0.0) + 0.001),
                ("ts", victim.ts.replace(microsecond=(victim.ts.microsecond + 1) % 1_000_000)),
                ("detail", '{"rule_id": "grt-forged"}'),
            ]
        )
        await conn.execute(
            text(f"UPDATE audit_events SET {column} = :v WHERE id = :id"),
            {"v": value, "id": victim.id},
        )
        return Expected(victim.id, "content_changed")
    if kind in ("hash", "prev_hash"):
        await conn.execute(
            text(f"UPDATE audit_events SET {kind} = :v WHERE id = :id"),
            {"v": secrets.token_hex(32), "id": victim.id},
        )
        return Expected(victim.id, "content_changed")
    if kind == "delete":
        await conn.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": victim.id})
        return (
            Expected(after, "missing_predecessor")
            if after
            else Expected(victim.id, "anchor_missing")
        )
    if kind == "rehash":
        # A careful forger: changes a record and recomputes its hash.
        forged = victim._asdict() | {"actor": "u-intruder"}
        digest = chain_hash(victim.prev_hash, SimpleNamespace(**forged))
        await conn.execute(
            text("UPDATE audit_events SET actor = 'u-intruder', hash = :h WHERE id = :id"),
            {"h": digest, "id": victim.id},
        )
        return (
            Expected(after, "missing_predecessor")
            if after
            else Expected(victim.id, "anchor_changed")
        )
    if kind == "reorder":
        # Swap two records' places: each takes the other's id.
        other = rng.choice([r for r in chain if r.id != victim.id])
        low, high = sorted((victim.id, other.id))
        await conn.execute(text("UPDATE audit_events SET id = -1 WHERE id = :a"), {"a": low})
        await conn.execute(
            text("UPDATE audit_events SET id = :a WHERE id = :b"), {"a": low, "b": high}
        )
        await conn.execute(text("UPDATE audit_events SET id = :b WHERE id = -1"), {"b": high})
        return Expected(low, "content_changed")
    if kind == "insert":
        # A forged record in a gap the ids left (a rolled-back request), with the hash a
        # forger would compute: it links correctly to the record before it.
        gaps = [i for i in range(1, ids[-1]) if i not in set(ids)]
        gap = rng.choice(gaps)
        before = [r for r in chain if r.id < gap]
        prev = before[-1].hash if before else GENESIS
        forged = dict(
            id=gap,
            ts=T0,
            actor="u-intruder",
            action="unlock.requested",
            building_id="bld-0",
            door_id="door-0",
            gateway_id="gw-0",
            decision="allow",
            reason=None,
            command_id=secrets.token_hex(8),
            result=None,
            latency_ms=None,
            detail={},
        )
        digest = chain_hash(prev, SimpleNamespace(**forged))
        await conn.execute(
            text(
                "INSERT INTO audit_events (id, ts, actor, action, building_id, door_id,"
                " gateway_id, decision, reason, command_id, result, latency_ms, detail,"
                " prev_hash, hash) VALUES (:id, :ts, :actor, :action, :building_id, :door_id,"
                " :gateway_id, :decision, :reason, :command_id, :result, :latency_ms,"
                " '{}', :prev_hash, :hash)"
            ),
            {
                **{k: v for k, v in forged.items() if k != "detail"},
                "prev_hash": prev,
                "hash": digest,
            },
        )
        return Expected(gap, "inserted")
    raise AssertionError(kind)


KINDS = ("modify", "hash", "prev_hash", "delete", "rehash", "reorder", "insert")


async def test_concurrent_writers_build_an_intact_chain_and_100_tamperings_are_detected(
    chain_url: str,
) -> None:
    engines: list[AsyncEngine] = [create_async_engine(chain_url) for _ in range(2)]
    try:
        rolled_back, seconds = await build_chain(engines, RECORDS, writers=6, seed=7)
        async with engines[0].connect() as conn:
            chain = await rows(conn)
            async with AsyncSession(bind=conn) as session:
                intact = await verify_chain(session, batch=64)
        assert len(chain) == RECORDS
        assert intact.intact, intact.broken
        assert intact.checked == RECORDS
        assert (intact.head_id, intact.head_hash) == (chain[-1].id, chain[-1].hash)
        assert chain[0].prev_hash == GENESIS
        assert rolled_back > 0
        assert chain[-1].id > RECORDS
        print(
            f"\naudit chain: {RECORDS} records appended by 6 concurrent writers over 2 engines "
            f"in {seconds:.2f} s ({rolled_back} transactions rolled back, leaving id gaps); "
            "verify: intact"
        )

        rng = random.Random(20291)
        detected = named = 0
        kinds: Counter[str] = Counter()
        misnamed: list[str] = []
        anchor = [(intact.head_id, intact.head_hash)]
        async with engines[0].connect() as conn:
            for _ in range(TAMPERINGS):
                kind = rng.choice(KINDS)
                kinds[kind] += 1
                expected = await tamper(conn, kind, chain, rng)
                async with AsyncSession(bind=conn) as session:
                    result = await verify_chain(session, batch=64, anchors=anchor)  # type: ignore[arg-type]
                await conn.rollback()
                if result.broken is not None:
                    detected += 1
                    got = Expected(result.broken.record_id, result.broken.problem)
                    if got == expected:
                        named += 1
                    else:
                        misnamed.append(f"{kind}: expected {expected}, got {got}")
        print(
            f"audit chain: {detected}/{TAMPERINGS} tamperings detected, first broken record "
            f"named correctly in {named}/{TAMPERINGS} ({dict(sorted(kinds.items()))})"
        )
        assert detected == TAMPERINGS
        assert named == TAMPERINGS, misnamed
    finally:
        for engine in engines:
            await engine.dispose()


async def test_citykey_audit_verify_names_the_first_broken_record(chain_url: str) -> None:
    citykey = str(Path(sys.executable).parent / "citykey")
    env = {**os.environ, "CITYKEY_DATABASE_URL": chain_url}

    async def verify(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            citykey,
            "audit",
            "verify",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode()

    engine = create_async_engine(chain_url)
    try:
        async with engine.connect() as conn:
            chain = await rows(conn)
        if len(chain) < 10:  # run on its own, without the test above
            await build_chain([engine], 30, writers=2, seed=11)
            async with engine.connect() as conn:
                chain = await rows(conn)
        code, out = await verify("--batch", "50")
        assert code == 0, out
        assert f"verified {len(chain)} audit records: the chain is intact" in out
        head = f"{chain[-1].id}:{chain[-1].hash}"
        assert head in out

        victim = chain[len(chain) // 2]
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE audit_events SET reason = 'edited' WHERE id = :id"), {"id": victim.id}
            )
        try:
            code, out = await verify("--anchor", head)
            assert code == 1, out
            assert f"first broken record: {victim.id} (content_changed)" in out
            assert f"verified {len(chain) // 2} audit records, then the chain is BROKEN" in out
        finally:
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE audit_events SET reason = :r WHERE id = :id"),
                    {"r": victim.reason, "id": victim.id},
                )

        # The tail cannot be checked by the chain alone; the anchor catches its deletion.
        async with engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM audit_events WHERE id = :id"), {"id": chain[-1].id}
            )
        try:
            code, out = await verify("--anchor", head)
            assert code == 1, out
            assert f"first broken record: {chain[-1].id} (anchor_missing)" in out
        finally:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        f"INSERT INTO audit_events ({COLUMNS}) SELECT {COLUMNS} FROM "
                        "json_populate_record(NULL::audit_events, :row)"
                    ),
                    {"row": json.dumps(chain[-1]._asdict(), default=str)},
                )
        code, out = await verify("--anchor", "not-an-anchor")
        assert code == 2
        assert "ID:HASH" in out
    finally:
        await engine.dispose()
