"""Fixtures for the offline unlock tests: real gateways with a local endpoint and a state
directory, optionally behind a link the test can cut; an HTTP client playing the phone's local
radio; and a clean broker afterwards (revocation lists are retained on the shared Mosquitto)."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import col, select, update

from api.common import utcnow
from api.gateways.models import Gateway as GatewayRow
from api.offline.models import OfflineToken
from citykey_protocol.messages import GatewayEvent
from citykey_protocol.topics import GatewayTopics
from citykey_protocol.transport import BrokerAddress
from lock_gateway.local_endpoint import LocalEndpoint
from tests.conftest import ApiHarness
from tests.offline.link import BuildingLink
from tests.support import RunningGateway, World, unique

WAIT_S = 8.0
"""Upper bound of every wait for something the gateway or the API does."""


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting for: {what}")


def endpoint_url(running: RunningGateway) -> str:
    endpoint = running.gateway.offline.endpoint
    assert isinstance(endpoint, LocalEndpoint)
    return endpoint.url


StartOffline = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def offline_cleanup(world: World, broker: BrokerAddress) -> AsyncIterator[None]:
    """After the test: the offline tokens of the world's gateways expire (so the revocation
    publisher of a later test's API does not publish their lists again) and no retained
    revocation list is left on the shared broker. Integration modules use it (pytestmark)."""
    yield
    async with world.state.sessions() as session:
        gateway_ids = list(
            (
                await session.execute(
                    select(col(GatewayRow.id)).where(
                        col(GatewayRow.building_id) == world.building_id
                    )
                )
            )
            .scalars()
            .all()
        )
        if gateway_ids:
            await session.execute(
                update(OfflineToken)
                .where(col(OfflineToken.gateway_id).in_(gateway_ids))
                .values(expires_at=utcnow() - timedelta(hours=1))
            )
            await session.commit()
    async with broker.client(unique("cleanup")) as client:
        for gateway_id in gateway_ids:
            await client.publish(GatewayTopics(gateway_id).revocations, b"", qos=1, retain=True)


@pytest.fixture
def start_offline_gateway(world: World, tmp_path: Path, broker: BrokerAddress) -> StartOffline:
    """Start the real gateway code with a local endpoint on 127.0.0.1 (free port) and a state
    directory; with ``link``, its broker connection goes through that BuildingLink."""

    async def start(
        gateway_id: str,
        doors: dict[str, int],
        *,
        link: BuildingLink | None = None,
        state_dir: Path | None = None,
    ) -> RunningGateway:
        config = dataclasses.replace(
            world.gateway_config(gateway_id, doors),
            broker=BrokerAddress("127.0.0.1", link.port) if link else broker,
            local_listen="127.0.0.1:0",
            state_dir=state_dir or tmp_path / gateway_id,
        )
        running = await world.start_gateway(gateway_id, doors, config=config)
        await wait_for(lambda: running.gateway.connected.is_set(), "gateway connected")
        return running

    return start


@pytest.fixture
async def link(broker: BrokerAddress) -> AsyncIterator[BuildingLink]:
    """A building's internet link to the shared broker, up at the start."""
    building_link = BuildingLink(broker.host, broker.port)
    await building_link.restore()
    yield building_link
    await building_link.close()


@pytest.fixture
async def radio() -> AsyncIterator[httpx.AsyncClient]:
    """The phone's local channel to gateways (HTTP on loopback, no proxies from the env)."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


@pytest.fixture
def api_events(api: ApiHarness) -> list[GatewayEvent]:
    """Every gateway event the API's relay hears from now on."""
    heard: list[GatewayEvent] = []

    async def listen(event: GatewayEvent) -> None:
        heard.append(event)

    api.state.relay.on_event(listen)
    return heard
