"""Database faults, injected for real: the API reaches PostgreSQL only through a TCP proxy that
the test partitions (``blackhole``: connections accepted, nothing answered) or shuts
(``refuse``: connections refused and reset). Each test prints its figures (pytest -s).

Promises checked (docs/reliability.md):
- with the database unreachable every unlock is answered ``503 database_unavailable`` within
  1 s, with Retry-After, and no door moves;
- /readyz says so within its own bound, /healthz stays 200, and the API recovers by itself;
- no command leaves for a gateway unless its authorization audit row was committed: a database
  failure at every single step of an unlock up to that commit sends nothing.
"""

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from sqlalchemy import event

from api.unlock.service import ACTION_REQUESTED
from citykey_protocol import messages
from citykey_protocol.topics import GatewayTopics
from citykey_protocol.transport import BrokerAddress
from tests.conftest import ApiHarness
from tests.faults.broker import TestBroker
from tests.faults.conftest import UNLOCK_TIMEOUT_S
from tests.faults.helpers import (
    Answer,
    Executions,
    add_citizens,
    audit_rows,
    latency_summary,
    lock_actuations,
    ms,
    requested_rows,
    run_unlocks,
    unlock,
)
from tests.faults.tcp_proxy import TcpProxy
from tests.support import RunningGateway, World, unique

pytestmark = pytest.mark.timeout(150)

OUTAGE_UNLOCKS = 50
CONCURRENCY = 5
ANSWER_BOUND_S = 1.0
"""The issue's bound: with the database unreachable, an unlock is answered within 1 s."""
MARGIN_S = 0.5
"""Allowance beyond the unlock timeout for the in-process HTTP round trip and event-loop lag
on a busy machine; what it catches are waits of seconds (see test_broker_faults.MARGIN_S)."""


async def _timed_get(api: ApiHarness, path: str) -> tuple[int, dict[str, Any], float]:
    started = time.perf_counter()
    response = await api.client.get(path)
    return response.status_code, response.json(), time.perf_counter() - started


async def _recover(api: ApiHarness, door_id: str, citizen: str) -> tuple[Answer, int]:
    """Unlock until it works again (at most 20 tries, 0.1 s apart); the API is not restarted."""
    for attempt in range(1, 21):
        answer = await unlock(api, door_id, citizen, attempt)
        if answer.status == 200:
            return answer, attempt
        await asyncio.sleep(0.1)
    return answer, 20


async def test_database_unreachable_unlocks_answer_503_within_1s_and_recover(
    db_api: ApiHarness,
    db_world: World,
    db_proxy: TcpProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, world = db_api, db_world
    gateway_id, doors = await world.add_gateway(doors=2)
    running = await world.start_gateway(gateway_id, doors)
    executions = Executions()
    executions.attach(running, monkeypatch)
    door_ids = list(doors)
    citizens = await add_citizens(world, 10)
    warm = await unlock(api, door_ids[0], citizens[0])
    assert warm.status == 200, warm

    modes: tuple[Literal["blackhole", "refuse"], ...] = ("blackhole", "refuse")
    for n, mode in enumerate(modes):
        before = lock_actuations([running])
        db_proxy.cut(mode)
        ready_status, ready_body, ready_s = await _timed_get(api, "/readyz")
        health_status, _, _ = await _timed_get(api, "/healthz")

        async def one(i: int) -> Answer:
            return await unlock(api, door_ids[i % 2], citizens[i % len(citizens)], i)

        answers = await run_unlocks(OUTAGE_UNLOCKS, CONCURRENCY, one)
        during = lock_actuations([running])
        await db_proxy.heal()
        recovered, attempts = await _recover(api, door_ids[1], citizens[-1 - n])
        after_status, after_body, _ = await _timed_get(api, "/readyz")

        unavailable = [a for a in answers if (a.status, a.code) == (503, "database_unavailable")]
        too_slow = [a for a in answers if a.seconds > ANSWER_BOUND_S]
        print(
            f"\ndatabase unreachable ({mode}): {len(unavailable)}/{OUTAGE_UNLOCKS} unlocks "
            f"answered 503 database_unavailable ({CONCURRENCY} at a time), "
            f"{latency_summary([a.seconds for a in answers])}, over 1 s: {len(too_slow)}; "
            f"Retry-After: {sorted({a.retry_after for a in answers}, key=str)}; actuations "
            f"during the outage: {during - before}"
            f"\n  /readyz during: {ready_status} {ready_body['checks']} in {ms(ready_s)}; "
            f"/healthz: {health_status}; after healing: unlock {recovered.status} at attempt "
            f"{attempts}, /readyz {after_status} {after_body['checks']}"
        )
        assert len(unavailable) == OUTAGE_UNLOCKS, [a for a in answers if a not in unavailable]
        assert not too_slow, too_slow[:5]
        assert all(a.retry_after for a in answers)
        assert during == before
        assert ready_status == 503
        assert ready_body["checks"]["database"] != "ok"
        assert ready_s < ANSWER_BOUND_S
        assert health_status == 200
        assert recovered.status == 200, recovered
        assert after_status == 200, after_body

    # No actuation without audit: every command a gateway acted on has its authorization row.
    rows = await audit_rows(api, *citizens)
    requested = {r.command_id for r in rows if r.action == ACTION_REQUESTED}
    actuated = executions.actuated()
    print(
        f"  actuations in the whole test: {lock_actuations([running])}, each with its "
        f"unlock.requested row: {sum(1 for cid in actuated if cid in requested)}/{len(actuated)}"
    )
    assert set(actuated) <= requested
    assert lock_actuations([running]) == sum(actuated.values())


@dataclass
class _FaultPlan:
    """Cut the database link just before step ``at`` of the traced request."""

    at: int | None = None
    mode: Literal["blackhole", "refuse"] = "refuse"
    steps: list[str] = field(default_factory=list)


_TRACE: contextvars.ContextVar[_FaultPlan | None] = contextvars.ContextVar(
    "citykey_fault_trace", default=None
)


def _install_fault_points(api: ApiHarness, proxy: TcpProxy) -> None:
    """Every statement and every COMMIT of a traced request is a step; the plan cuts the link
    right before its chosen step. Only the request under test is traced (a context variable),
    not the API's background writers."""

    def step(label: str) -> None:
        plan = _TRACE.get()
        if plan is None:
            return
        if plan.at == len(plan.steps):
            proxy.cut(plan.mode)
        plan.steps.append(label)

    @event.listens_for(api.state.engine.sync_engine, "before_cursor_execute")
    def _statement(*args: Any) -> None:
        statement: str = args[2]
        step(" ".join(statement.split()[:3])[:40])

    @event.listens_for(api.state.engine.sync_engine, "commit")
    def _commit(*_: Any) -> None:
        step("COMMIT")


@contextlib.asynccontextmanager
async def _command_sniffer(broker: BrokerAddress, gateway_id: str) -> AsyncIterator[list[str]]:
    """Command ids published to the gateway, as the broker delivers them."""
    seen: list[str] = []
    async with broker.client(unique("sniffer")) as client:
        await client.subscribe(GatewayTopics(gateway_id).commands, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                if isinstance(message.payload, bytes) and message.payload:
                    seen.append(messages.command_decoder.decode(message.payload).command_id)

        task = asyncio.create_task(collect())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _traced_unlock(api: ApiHarness, plan: _FaultPlan, door_id: str, citizen: str) -> Answer:
    token = _TRACE.set(plan)
    try:
        return await unlock(api, door_id, citizen)
    finally:
        _TRACE.reset(token)


async def test_no_command_leaves_before_its_audit_row_is_committed(
    db_api: ApiHarness,
    db_world: World,
    db_proxy: TcpProxy,
    test_broker: TestBroker,
) -> None:
    api, world = db_api, db_world
    gateway_id, doors = await world.add_gateway()
    door_id = next(iter(doors))
    running: RunningGateway = await world.start_gateway(gateway_id, doors)
    citizens = iter(await add_citizens(world, 40))  # a fresh citizen per request: no rate limit
    _install_fault_points(api, db_proxy)

    async with _command_sniffer(test_broker.address, gateway_id) as sniffed:
        clean = _FaultPlan()
        answer = await _traced_unlock(api, clean, door_id, next(citizens))
        assert answer.status == 200, answer
        async with asyncio.timeout(5):
            while answer.command_id not in sniffed:  # the sniffer may hear it after the 200
                await asyncio.sleep(0.01)
        steps = clean.steps
        # The commit of the authorization row: the first COMMIT after the audit INSERT.
        audit_insert = next(i for i, s in enumerate(steps) if s.startswith("INSERT INTO audit"))
        commit = steps.index("COMMIT", audit_insert)
        print(
            f"\nfault at every database step of an unlock up to the commit of its audit row "
            f"({commit + 1} steps: {', '.join(steps[: commit + 1])})"
        )

        outcomes: list[tuple[str, int, Answer, int, int]] = []
        modes: tuple[Literal["refuse", "blackhole"], ...] = ("refuse", "blackhole")
        for mode in modes:
            for at in range(commit + 1):
                sent_before, moved_before = len(sniffed), lock_actuations([running])
                plan = _FaultPlan(at=at, mode=mode)
                answer = await _traced_unlock(api, plan, door_id, next(citizens))
                await db_proxy.heal()
                await asyncio.sleep(0.2)  # a command that left would have arrived by now
                outcomes.append(
                    (
                        mode,
                        at,
                        answer,
                        len(sniffed) - sent_before,
                        lock_actuations([running]) - moved_before,
                    )
                )
        for mode in modes:
            mine = [o for o in outcomes if o[0] == mode]
            worst = max(o[2].seconds for o in mine)
            print(
                f"  {mode}: {len(mine)} fault points, answers "
                f"{sorted({f'{o[2].status} {o[2].code}' for o in mine})}, slowest {ms(worst)}, "
                f"commands sent: {sum(o[3] for o in mine)}, actuations: {sum(o[4] for o in mine)}"
            )

        # One step later the authorization row is durable: the command leaves and the door
        # opens; the result row cannot be written, so the answer is 503 (the gateway's own
        # journal reports the actuation).
        sent_before, moved_before = len(sniffed), lock_actuations([running])
        late = _FaultPlan(at=commit + 1, mode="refuse")
        after_commit = await _traced_unlock(api, late, door_id, next(citizens))
        await db_proxy.heal()
        await asyncio.sleep(0.2)
        late_sent = sniffed[sent_before:]
        committed = {r.command_id for r in await requested_rows(api, late_sent)}
        late_step = late.steps[commit + 1] if len(late.steps) > commit + 1 else "?"
        print(
            f"  fault one step after that commit ({late_step}): answer {after_commit.status} "
            f"{after_commit.code}, commands sent {len(late_sent)}, actuations "
            f"{lock_actuations([running]) - moved_before}, each with its committed "
            f"unlock.requested row: {len(committed)}/{len(late_sent)}"
        )

    for fault, at, answer, sent, moved in outcomes:
        where = f"{fault} before step {at} ({steps[at]})"
        assert (answer.status, answer.code) == (503, "database_unavailable"), (where, answer)
        assert sent == 0, where
        assert moved == 0, where
        assert answer.seconds <= UNLOCK_TIMEOUT_S + MARGIN_S, (where, answer)
    assert len(late_sent) == 1
    assert committed == set(late_sent)
