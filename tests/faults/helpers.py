"""Counting what the fault tests need: every actuation the gateways make, every answer the API
gives, every audit row it writes."""

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from sqlmodel import col, select

from api.audit.models import AuditEvent
from api.identity.models import Role, User
from api.unlock.service import ACTION_COMPLETED, ACTION_REQUESTED
from citykey_protocol.codes import AckResult
from citykey_protocol.messages import Ack, UnlockCommand
from tests.conftest import ApiHarness
from tests.support import RunningGateway, World, unique


@dataclass
class Executions:
    """What the real gateway code decided for each command it received, recorded around
    ``Gateway.execute`` (which validates, actuates and makes the ack)."""

    acks: dict[str, list[Ack]] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)

    def attach(self, running: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
        original = running.gateway.execute

        async def execute(command: UnlockCommand) -> Ack:
            self.received_at.setdefault(command.command_id, time.monotonic())
            ack = await original(command)
            self.acks.setdefault(command.command_id, []).append(ack)
            return ack

        monkeypatch.setattr(running.gateway, "execute", execute)

    def actuated(self) -> dict[str, int]:
        """Command id -> how many times the gateway actuated the lock for it."""
        counts = {
            command_id: sum(1 for ack in acks if ack.result is AckResult.UNLOCKED)
            for command_id, acks in self.acks.items()
        }
        return {command_id: n for command_id, n in counts.items() if n}


def lock_actuations(gateways: list[RunningGateway]) -> int:
    """Unlocks the simulated hardware performed, all channels of all gateways."""
    return sum(state.unlock_count for g in gateways for state in g.lock.channels.values())


async def add_citizens(world: World, count: int) -> list[str]:
    """``count`` more citizens, each with a grant on the whole building. Many citizens, as in
    a real building: the per-citizen, per-door rate limit stays on and is not what is tested."""
    ids = [unique("u-cit") for _ in range(count)]
    async with world.state.sessions() as session:
        for user_id in ids:
            session.add(User(id=user_id, display_name="Citizen", roles=[Role.CITIZEN]))
        await session.commit()
    for user_id in ids:
        await world.grant(user_id, building=True)
    return ids


@dataclass(frozen=True)
class Answer:
    index: int
    status: int
    code: str
    command_id: str | None
    seconds: float
    retry_after: str | None = None


async def unlock(
    api: ApiHarness, door_id: str, user_id: str, index: int = 0, seconds: int = 1
) -> Answer:
    """POST one unlock and time it; a transport failure is an answer with status 0."""
    started = time.perf_counter()
    try:
        response = await api.client.post(
            f"/v1/doors/{door_id}/unlock", json={"seconds": seconds}, headers=api.token_for(user_id)
        )
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        return Answer(index, 0, f"no answer: {exc!r}", None, time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    body = response.json()
    if response.status_code == 200:
        return Answer(index, 200, "unlocked", body["command_id"], elapsed)
    error = body.get("error", {})
    return Answer(
        index,
        response.status_code,
        error.get("code", "?"),
        error.get("command_id"),
        elapsed,
        response.headers.get("retry-after"),
    )


async def run_unlocks(
    count: int,
    concurrency: int,
    one: Callable[[int], Awaitable[Answer]],
    *,
    rate_per_s: float | None = None,
) -> list[Answer]:
    """``count`` calls of ``one(i)``, at most ``concurrency`` at a time, started no faster than
    ``rate_per_s`` (so that a run lasts long enough for faults to land in it)."""
    answers: list[Answer] = []
    indexes = iter(range(count))
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def worker() -> None:
        for i in indexes:
            if rate_per_s:
                await asyncio.sleep(max(0.0, t0 + i / rate_per_s - loop.time()))
            answers.append(await one(i))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sorted(answers, key=lambda a: a.index)


async def audit_rows(api: ApiHarness, *actors: str) -> list[AuditEvent]:
    """Every unlock audit row of ``actors``, oldest first."""
    async with api.state.sessions() as session:
        statement = (
            select(AuditEvent)
            .where(col(AuditEvent.actor).in_(actors))
            .where(col(AuditEvent.action).in_([ACTION_REQUESTED, ACTION_COMPLETED]))
            .order_by(col(AuditEvent.id))
        )
        return list((await session.execute(statement)).scalars().all())


async def requested_rows(api: ApiHarness, command_ids: list[str]) -> list[AuditEvent]:
    """The ``unlock.requested`` rows of these commands."""
    async with api.state.sessions() as session:
        statement = (
            select(AuditEvent)
            .where(col(AuditEvent.command_id).in_(command_ids))
            .where(col(AuditEvent.action) == ACTION_REQUESTED)
        )
        return list((await session.execute(statement)).scalars().all())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def latency_summary(values: list[float]) -> str:
    """``p50 / max`` of durations in seconds, as milliseconds."""
    if not values:
        return "n=0"
    return f"p50 {ms(statistics.median(values))}, max {ms(max(values))} (n={len(values)})"
