"""Two API instances against one PostgreSQL and one Mosquitto (docs/operations.md, "Scale-out").

Both run in this process (two ``create_app`` with their own ``instance_id``), a real gateway
runs the real daemon. Proven for both subscription modes of gateway events (every instance
receives every event, the default; or one instance per event through a shared subscription):
an unlock succeeds through either instance, each ack reaches the instance that sent the
command and no other, and every gateway event is stored exactly once.
"""

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col

from api.events.ingest import EventIngestor
from api.events.models import GatewayEventRecord
from api.main import create_app
from api.relay.mqtt import MqttRelay
from api.settings import Settings
from citykey_protocol.messages import UNLOCK_EVENT, Ack
from citykey_protocol.transport import BrokerAddress
from tests.conftest import ApiHarness
from tests.journal.support import wait_for
from tests.support import World, unique

UNLOCKS_EACH = 6


class CountingRelay(MqttRelay):
    """The real relay, counting the acks that reach it (per gateway command id)."""

    def __init__(self, broker: BrokerAddress, instance_id: str, **kwargs: str | None) -> None:
        super().__init__(broker, instance_id, **kwargs)
        self.acks_seen: Counter[str] = Counter()

    def _on_ack(self, gateway_id: str, ack: Ack) -> None:
        self.acks_seen[ack.command_id] += 1
        super()._on_ack(gateway_id, ack)


ingestors: dict[str, EventIngestor] = {}
"""The running instances' event ingestors, by instance id (for their counters)."""


async def _start(stack: AsyncExitStack, settings: Settings) -> ApiHarness:
    app = create_app(settings)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    )
    ingestors[settings.instance_id] = app.state.event_ingestor
    return ApiHarness(client, app.state.citykey)


@pytest.fixture(params=["every-instance", "shared"])
async def pair(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ApiHarness, ApiHarness]]:
    """Two running API instances; with ``shared``, gateway events go to a shared subscription
    group unique to this test (the machine's broker is shared with other test runs)."""
    share = unique("grp") if request.param == "shared" else None
    monkeypatch.setattr("api.main.MqttRelay", functools.partial(CountingRelay, share_events=share))
    ingestors.clear()
    async with AsyncExitStack() as stack:
        first = await _start(stack, settings)
        second = await _start(stack, settings.model_copy(update={"instance_id": unique("api-two")}))
        yield first, second


async def _stored(api: ApiHarness, gateway_id: str) -> list[GatewayEventRecord]:
    async with api.state.sessions() as session:
        rows = await session.scalars(
            select(GatewayEventRecord).where(col(GatewayEventRecord.gateway_id) == gateway_id)
        )
        return list(rows)


async def test_unlocks_acks_and_events_across_two_instances(
    pair: tuple[ApiHarness, ApiHarness], broker: BrokerAddress
) -> None:
    first, second = pair
    world = World(first.state, broker)
    await world.seed()
    try:
        gateway_id, doors = await world.add_gateway(doors=2)
        await world.grant(world.citizen_id, building=True)
        running = await world.start_gateway(gateway_id, doors)
        await wait_for(
            lambda: second.state.relay.gateway_online(gateway_id), 10, "second sees the gateway"
        )

        # Unlocks through either instance succeed, interleaved and concurrently.
        door_ids = sorted(doors)
        sent: dict[str, ApiHarness] = {}

        async def unlock(api: ApiHarness, door_id: str) -> None:
            response = await api.client.post(
                f"/v1/doors/{door_id}/unlock", headers=api.token_for(world.citizen_id)
            )
            assert response.status_code == 200, response.text
            body = response.json()
            sent[body["command_id"]] = api

        await asyncio.gather(
            *(
                unlock(api, door_ids[i % len(door_ids)])
                for i in range(UNLOCKS_EACH)
                for api in (first, second)
            )
        )
        assert len(sent) == 2 * UNLOCKS_EACH
        assert running.gateway.actuations == 2 * UNLOCKS_EACH

        # Each ack reached the instance that sent the command, and only that one.
        relays = {first: first.state.relay, second: second.state.relay}
        for command_id, api in sent.items():
            for other, relay in relays.items():
                assert isinstance(relay, CountingRelay)
                assert relay.acks_seen[command_id] == (1 if other is api else 0)

        # Every journaled event is stored exactly once, whoever received it.
        journal = running.gateway.journal

        async def all_acknowledged() -> bool:
            rows = await _stored(first, gateway_id)
            return journal.unacked == 0 and len(rows) == journal.last_seq - journal.first_seq + 1

        await wait_for(all_acknowledged, 20, "every journaled event stored and acknowledged")
        rows = await _stored(first, gateway_id)
        seqs = Counter(row.seq for row in rows)
        assert all(n == 1 for n in seqs.values())
        unlocks = Counter(row.data.get("command_id") for row in rows if row.kind == UNLOCK_EVENT)
        assert unlocks == Counter({command_id: 1 for command_id in sent})
        async with first.state.sessions() as session:
            total = await session.scalar(
                select(func.count()).where(col(GatewayEventRecord.gateway_id) == gateway_id)
            )
        assert total == len(seqs) == journal.last_seq - journal.first_seq + 1
        # Who did the work: with a shared subscription each event reached one instance
        # (resends aside); without, both received every event and the database kept one copy.
        stats = [ingestor.stats for ingestor in ingestors.values()]
        assert sum(s.stored for s in stats) == total
        if first.state.relay.share_events is None:
            assert all(s.received >= total for s in stats)
        print(f"ingest stats ({'shared' if first.state.relay.share_events else 'every'}): {stats}")
    finally:
        await world.close()
