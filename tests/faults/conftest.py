"""Fixtures for the fault tests: the API and real gateways against a broker the test may kill,
or against a database link the test may cut.

Both faults are real: a mosquitto process this test started, SIGKILLed by its PID
(tests/faults/broker.py), and a TCP proxy between the API and PostgreSQL that stops forwarding
or refuses connections (tests/faults/tcp_proxy.py). Nothing shared on the machine is stopped.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from api.main import create_app
from api.settings import Settings
from tests.conftest import ApiHarness
from tests.faults.broker import TestBroker
from tests.faults.tcp_proxy import TcpProxy
from tests.support import World

UNLOCK_TIMEOUT_S = 2.0
"""The unlock deadline in these tests (as in the rest of the suite)."""


PRODUCTION_DB_TIMEOUTS = {
    name: Settings.model_fields[name].default
    for name in ("db_connect_timeout_s", "db_pool_timeout_s", "db_ping_timeout_s")
}
"""The shared test settings relax these; the fault tests prove the shipped defaults."""


async def _harness(stack: AsyncExitStack, settings: Settings) -> ApiHarness:
    app = create_app(settings)
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30
        )
    )
    return ApiHarness(client, app.state.citykey)


@pytest.fixture
def test_broker() -> Iterator[TestBroker]:
    """A mosquitto of this test's own, running; stopped (by PID) and removed afterwards."""
    broker = TestBroker()
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
async def broker_api(settings: Settings, test_broker: TestBroker) -> AsyncIterator[ApiHarness]:
    """The API connected to ``test_broker``. Tokens live 5 s (the shortest the settings allow)
    so that a test can wait for one to expire."""
    async with AsyncExitStack() as stack:
        yield await _harness(
            stack,
            settings.model_copy(
                update={
                    "mqtt_url": test_broker.url,
                    "unlock_timeout_s": UNLOCK_TIMEOUT_S,
                    "token_lifetime_s": 5,
                }
            ),
        )


@pytest.fixture
async def broker_world(broker_api: ApiHarness, test_broker: TestBroker) -> AsyncIterator[World]:
    """A seeded world whose gateways connect to ``test_broker``."""
    world = World(broker_api.state, test_broker.address)
    await world.seed()
    yield world
    if not test_broker.running:  # a test that ends with the broker down: let close() publish
        await asyncio.to_thread(test_broker.start)
    await world.close()


@pytest.fixture
async def db_proxy(pg_database_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the test database's PostgreSQL, forwarding until told otherwise."""
    parts = urlsplit(pg_database_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def db_api(
    settings: Settings, pg_database_url: str, db_proxy: TcpProxy, test_broker: TestBroker
) -> AsyncIterator[ApiHarness]:
    """The API reaching PostgreSQL only through ``db_proxy``, on a broker of its own (the
    machine's broker carries other test runs' gateways, whose events and statuses this API
    would otherwise try to store during the outage).

    The statement timeout equals the unlock timeout, as docs/operations.md advises: the
    identity lookup runs before the unlock deadline starts, and this keeps a partition that
    strikes during that one statement inside the deadline too."""
    parts = urlsplit(pg_database_url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    proxied = urlunsplit(parts._replace(netloc=f"{userinfo}{at}127.0.0.1:{db_proxy.port}"))
    async with AsyncExitStack() as stack:
        harness = await _harness(
            stack,
            settings.model_copy(
                update={
                    "database_url": proxied,
                    "mqtt_url": test_broker.url,
                    "unlock_timeout_s": UNLOCK_TIMEOUT_S,
                    "db_command_timeout_s": UNLOCK_TIMEOUT_S,
                    "db_pool_size": 5,
                    **PRODUCTION_DB_TIMEOUTS,
                }
            ),
        )
        stack.push_async_callback(db_proxy.heal)  # runs first: heal before the pool closes
        yield harness


@pytest.fixture
async def db_world(db_api: ApiHarness, test_broker: TestBroker) -> AsyncIterator[World]:
    """A seeded world (through the proxy) with gateways on the test's broker."""
    world = World(db_api.state, test_broker.address)
    await world.seed()
    yield world
    await world.close()
