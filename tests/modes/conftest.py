"""Helpers for the lockdown and passage tests: a manager of the world's building, gateways
with a state directory, a listener for gateway events, and a clean broker and building after
each test (mode messages are retained on the shared Mosquitto)."""

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import update
from sqlmodel import col

from api.buildings.models import Building, Door
from api.common import new_id
from api.gateways.models import Gateway as GatewayRow
from api.identity.models import Role, User
from api.modes.scheduler import PassageScheduler
from api.owners.models import ManagerScope
from citykey_protocol import messages
from citykey_protocol.messages import GatewayEvent
from citykey_protocol.topics import GatewayTopics
from citykey_protocol.transport import BrokerAddress
from firmware_sim.lock import SimulatedLock
from lock_gateway.daemon import Gateway
from lock_gateway.keys import KeySet
from tests.conftest import ApiHarness
from tests.support import RunningGateway, World, unique

WAIT_S = 8.0
"""Upper bound of every wait for something the gateways or the API do."""


@pytest.fixture
async def manager(api: ApiHarness, world: World) -> dict[str, str]:
    """Authorization headers of a manager whose scope is the world's building."""
    user_id = unique("u-mgr")
    async with api.state.sessions() as session:
        session.add(User(id=user_id, display_name="Mona Manager", roles=[Role.MANAGER]))
        await session.flush()
        session.add(ManagerScope(id=new_id("msc"), user_id=user_id, building_id=world.building_id))
        await session.commit()
    return api.token_for(user_id)


@pytest.fixture
def scheduler(api: ApiHarness) -> PassageScheduler:
    """A passage scheduler the test drives by calling ``tick`` (the app runs its own too)."""
    state = api.state
    return PassageScheduler(state.sessions, state.relay, state.keyring, state.settings.issuer)


@pytest.fixture
async def clean_modes(world: World) -> AsyncIterator[None]:
    """After the test: no lockdown, no passage schedule, version 0 for the world's building,
    so later schedulers (every app start runs one) leave it alone; and no retained mode
    message left for its gateways on the shared broker. Integration modules use it for every
    test (pytestmark)."""
    yield
    async with world.state.sessions() as session:
        await session.execute(
            update(Building)
            .where(col(Building.id) == world.building_id)
            .values(lockdown_since=None, lockdown_by=None, lockdown_reason=None, mode_version=0)
        )
        await session.execute(
            update(Door)
            .where(col(Door.building_id) == world.building_id)
            .values(passage_schedule=None)
        )
        gateway_ids = (
            (
                await session.execute(
                    update(GatewayRow)
                    .where(col(GatewayRow.building_id) == world.building_id)
                    .values(mode_version=0, mode_acked_at=None)
                    .returning(col(GatewayRow.id))
                )
            )
            .scalars()
            .all()
        )
        await session.commit()
    async with world.broker.client(unique("cleanup")) as client:
        for gateway_id in gateway_ids:
            await client.publish(GatewayTopics(gateway_id).mode, b"", qos=1, retain=True)


async def start_gateway(
    world: World,
    gateway_id: str,
    doors: dict[str, int],
    state_dir: Path,
    *,
    keys: KeySet | None = None,
    wait_online: bool = True,
) -> RunningGateway:
    """Run the real gateway code with a simulated lock and a state directory (the world's own
    helper has none); the world stops it at the end."""
    config = dataclasses.replace(world.gateway_config(gateway_id, doors), state_dir=state_dir)
    lock = SimulatedLock(sorted(doors.values()))
    keyset = keys or KeySet.from_jwks(world.state.keyring.jwks())
    gateway = Gateway(config, lock, keyset)
    running = RunningGateway(gateway, lock, asyncio.create_task(gateway.run()), doors)
    world.gateways.append(running)
    if wait_online:
        await wait_for(lambda: gateway.connected.is_set(), "gateway connected")
    return running


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting for: {what}")


class EventListener:
    """Collects the events one gateway publishes."""

    def __init__(self, broker: BrokerAddress, gateway_id: str) -> None:
        self._broker = broker
        self._topic = GatewayTopics(gateway_id).events
        self.events: list[GatewayEvent] = []
        self._stack = contextlib.AsyncExitStack()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "EventListener":
        client = await self._stack.enter_async_context(self._broker.client(unique("events")))
        await client.subscribe(self._topic, qos=1)
        self._task = asyncio.create_task(self._collect(client))
        return self

    async def _collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            self.events.append(messages.event_decoder.decode(message.payload))

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    def of_kind(self, kind: str) -> list[GatewayEvent]:
        return [e for e in self.events if e.kind == kind]

    async def next_of_kind(self, kind: str, after: int) -> GatewayEvent:
        """The first event of ``kind`` beyond the first ``after`` of that kind."""
        await wait_for(lambda: len(self.of_kind(kind)) > after, f"event {kind} #{after + 1}")
        return self.of_kind(kind)[after]
